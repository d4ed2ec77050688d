//! The MBG-250 on Modbus TCP, driven by a real tokio-modbus client as a driver would:
//! program slots, trigger a read-out, wait for idle, read and decode the results.

mod common;

use std::time::Duration;

use common::mbg::{config, decode, gateway, program, read_out, readings, u32_of, DAY, T0};
use common::{connect, Deadline, PATIENCE};
use gardien_simulators::mbg::status;
use gardien_simulators::{
    serve_tcp, serve_tcp_units, BusMeter, MbgConfig, MbgDevice, SimClock, SlotConfig, TcpServer,
    Unit,
};
use tokio::time::{timeout, Instant};
use tokio_modbus::client::Context;
use tokio_modbus::prelude::*;

async fn serve(device: &MbgDevice) -> (TcpServer, Context) {
    let server = serve_tcp(device.clone(), "127.0.0.1:0")
        .await
        .expect("serve");
    let ctx = connect(server.local_addr(), 1).await;
    (server, ctx)
}

async fn program_all(ctx: &mut Context, meters: &[BusMeter]) {
    for (slot, meter) in (0u16..).zip(meters) {
        program(ctx, slot, &SlotConfig::for_meter(meter)).await;
    }
}

#[tokio::test]
async fn firmware_2_reports_raw_indexes_with_exponents() {
    let (mbg, meters) = gateway(config(0x0201), 6);
    let (_server, mut ctx) = serve(&mbg).await;
    let identity = ctx.read_holding_registers(0, 8).await.unwrap().unwrap();
    assert_eq!(identity, vec![0x4D47, 0x0201, 250, 0, 0, 0, 0, 0]);

    program_all(&mut ctx, &meters).await;
    assert_eq!(
        ctx.read_holding_registers(3, 1).await.unwrap(),
        Ok(vec![18])
    );
    for night in 0..2 {
        let t = T0 + night * DAY;
        read_out(&mut ctx).await;
        let last = ctx.read_holding_registers(4, 2).await.unwrap().unwrap();
        assert_eq!(i64::from(u32_of(&last)), t);
        let read = readings(&mut ctx, 18, 2).await;
        for (meter, r) in meters.iter().zip(&read) {
            let truth = mbg.meter_value_at(meter.id, t).unwrap();
            assert_eq!(r.status, 0);
            assert_eq!(r.raw, truth.raw, "meter {}", meter.id);
            assert_eq!(r.exponent, i16::from(meter.exponent));
            assert_eq!(r.unit, meter.unit.code());
            assert_eq!(i64::from(r.time), t);
            assert_eq!(r.id_echo, meter.id);
            assert!((r.value - truth.value()).abs() < 1e-9);
        }
        mbg.advance(DAY);
    }
    // Water in litres (10^-3 m³), heat in kWh or allocator units (10^0).
    let kinds: Vec<(i8, Unit)> = meters.iter().map(|m| (m.exponent, m.unit)).collect();
    assert_eq!(kinds[0], (-3, Unit::CubicMetres));
    assert_eq!(kinds[2].0, 0);
}

#[tokio::test]
async fn firmware_1_reports_float32_low_word_first() {
    let (mbg, meters) = gateway(config(0x0104), 4);
    let (_server, mut ctx) = serve(&mbg).await;
    assert_eq!(
        ctx.read_holding_registers(1, 1).await.unwrap(),
        Ok(vec![0x0104])
    );
    program_all(&mut ctx, &meters).await;
    read_out(&mut ctx).await;
    for (meter, r) in meters.iter().zip(readings(&mut ctx, 12, 1).await) {
        let truth = mbg.meter_value_at(meter.id, T0).unwrap().value();
        assert_eq!(r.float, truth as f32, "meter {}", meter.id);
        // A float32 keeps about 7 significant digits: the precision loss is real.
        assert!(
            (r.value - truth).abs() <= truth * 1e-7,
            "{} {truth}",
            r.value
        );
        assert_eq!((r.high_words, r.exponent), ([0, 0], 0));
        assert_eq!((r.unit, i64::from(r.time)), (meter.unit.code(), T0));
    }
}

#[tokio::test]
async fn strict_refusals() {
    let (mbg, meters) = gateway(config(0x0201), 1);
    let (_server, mut ctx) = serve(&mbg).await;
    const E02: ExceptionCode = ExceptionCode::IllegalDataAddress;
    const E03: ExceptionCode = ExceptionCode::IllegalDataValue;
    assert_eq!(ctx.read_holding_registers(0, 9).await.unwrap(), Err(E02));
    assert_eq!(ctx.read_holding_registers(8, 1).await.unwrap(), Err(E02));
    assert_eq!(ctx.read_holding_registers(32, 1).await.unwrap(), Err(E02));
    assert_eq!(ctx.read_holding_registers(2100, 1).await.unwrap(), Err(E02));
    assert_eq!(
        ctx.read_holding_registers(100, 126).await.unwrap(),
        Err(E03)
    );
    assert_eq!(ctx.read_input_registers(999, 1).await.unwrap(), Err(E02));
    assert_eq!(ctx.read_input_registers(4990, 11).await.unwrap(), Err(E02));
    assert_eq!(ctx.read_input_registers(1000, 126).await.unwrap(), Err(E03));
    let coils = ctx.read_coils(0, 1).await.unwrap();
    assert_eq!(coils, Err(ExceptionCode::IllegalFunction));

    let slot = SlotConfig::for_meter(&meters[0]).registers();
    let write = async |ctx: &mut Context, addr: u16, words: &[u16]| {
        ctx.write_multiple_registers(addr, words).await.unwrap()
    };
    assert_eq!(write(&mut ctx, 100, &slot[..4]).await, Err(E03));
    assert_eq!(write(&mut ctx, 104, &slot).await, Err(E03));
    let mut bad_bcd = slot;
    bad_bcd[1] = 0x00A0;
    assert_eq!(write(&mut ctx, 100, &bad_bcd).await, Err(E03));
    assert_eq!(write(&mut ctx, 0, &[0x4D47]).await, Err(E03));
    assert_eq!(write(&mut ctx, 20, &[0]).await, Err(E02));
    // 123 registers is a legal write, but not one slot.
    assert_eq!(write(&mut ctx, 100, &[0; 123]).await, Err(E03));
    assert_eq!(ctx.write_single_register(3, 1).await.unwrap(), Err(E03));
    assert_eq!(ctx.write_single_register(7, 5).await.unwrap(), Err(E03));
    assert_eq!(mbg.snapshot().slots, vec![]);

    // What is allowed: a whole slot, the trigger (FC06 or FC16), the whole clock.
    assert_eq!(write(&mut ctx, 100, &slot).await, Ok(()));
    assert_eq!(write(&mut ctx, 30, &[0x6790, 0x0000]).await, Ok(()));
    let clock = ctx.read_holding_registers(30, 2).await.unwrap().unwrap();
    assert_eq!(u32_of(&clock), 0x6790_0000);
    assert_eq!(write(&mut ctx, 7, &[1]).await, Ok(()));
    let deadline = Deadline::after(PATIENCE);
    while ctx.read_holding_registers(6, 2).await.unwrap() != Ok(vec![0, 0]) {
        deadline.tick().await;
    }
    // The reading carries the gateway's clock, the meter lives on virtual time.
    let r = readings(&mut ctx, 1, 2).await[0];
    assert_eq!(r.time, 0x6790_0000);
    assert_eq!(r.raw, mbg.meter_value_at(meters[0].id, T0).unwrap().raw);
}

#[tokio::test]
async fn a_silent_meter_keeps_its_previous_reading() {
    let (mbg, meters) = gateway(config(0x0201), 1);
    let (_server, mut ctx) = serve(&mbg).await;
    program_all(&mut ctx, &meters).await;
    mbg.force_status(meters[2].id, status::BATTERY_LOW).unwrap();
    read_out(&mut ctx).await;
    let first = readings(&mut ctx, 3, 2).await;
    assert_eq!(first[2].status, status::BATTERY_LOW);

    mbg.set_answering(meters[0].id, false).unwrap();
    mbg.advance(DAY);
    read_out(&mut ctx).await;
    let second = readings(&mut ctx, 3, 2).await;
    assert_eq!(second[0].status, status::NO_ANSWER);
    assert_eq!(
        (second[0].raw, second[0].time),
        (first[0].raw, first[0].time)
    );
    assert_eq!(second[0].id_echo, meters[0].id);
    assert_eq!(i64::from(second[1].time), T0 + DAY);

    // "From virtual time T on": still answering tonight, silent tomorrow.
    mbg.set_answering(meters[0].id, true).unwrap();
    mbg.silence_from(meters[1].id, T0 + 2 * DAY).unwrap();
    mbg.advance(DAY);
    read_out(&mut ctx).await;
    let third = readings(&mut ctx, 3, 2).await;
    assert_eq!(third[0].status, 0);
    assert_eq!(i64::from(third[0].time), T0 + 2 * DAY);
    assert_eq!(third[1].status, status::NO_ANSWER);
    assert_eq!(i64::from(third[1].time), T0 + DAY);
}

#[tokio::test]
async fn a_stale_slot_keeps_the_previous_meter_id() {
    let (mbg, meters) = gateway(config(0x0201), 2);
    let (_server, mut ctx) = serve(&mbg).await;
    program(&mut ctx, 0, &SlotConfig::for_meter(&meters[0])).await;
    read_out(&mut ctx).await;
    let before = readings(&mut ctx, 1, 2).await[0];

    // The slot is given to another meter, but the read-out does not refresh it.
    program(&mut ctx, 0, &SlotConfig::for_meter(&meters[3])).await;
    assert!(mbg.set_stale(0, true));
    mbg.advance(DAY);
    read_out(&mut ctx).await;
    let stale = readings(&mut ctx, 1, 2).await[0];
    assert_eq!(stale, before);
    assert_eq!(stale.id_echo, meters[0].id);

    // A configured id nobody answers to: bit 0 and the old meter's data, too.
    assert!(mbg.set_stale(0, false));
    let mut ghost = SlotConfig::for_meter(&meters[3]);
    ghost.id = 99_999_998;
    program(&mut ctx, 0, &ghost).await;
    read_out(&mut ctx).await;
    let ghostly = readings(&mut ctx, 1, 2).await[0];
    assert_eq!(ghostly.status, status::NO_ANSWER);
    assert_eq!((ghostly.id_echo, ghostly.raw), (meters[0].id, before.raw));

    program(&mut ctx, 0, &SlotConfig::for_meter(&meters[3])).await;
    read_out(&mut ctx).await;
    let fresh = readings(&mut ctx, 1, 2).await[0];
    assert_eq!((fresh.status, fresh.id_echo), (0, meters[3].id));
}

#[tokio::test]
async fn the_read_out_takes_time_and_fills_slot_by_slot() {
    let per_meter = Duration::from_millis(40);
    let (mbg, meters) = gateway(
        MbgConfig {
            ms_per_meter: per_meter,
            ..config(0x0201)
        },
        3,
    );
    let (_server, mut ctx) = serve(&mbg).await;
    program_all(&mut ctx, &meters[..8]).await;
    let started = Instant::now();
    ctx.write_single_register(7, 1).await.unwrap().unwrap();
    assert_eq!(ctx.read_holding_registers(6, 1).await.unwrap(), Ok(vec![1]));
    // Writing the list while the bus is walked is refused; a second trigger is ignored.
    let busy = ctx
        .write_multiple_registers(100, &SlotConfig::default().registers())
        .await
        .unwrap();
    assert_eq!(busy, Err(ExceptionCode::ServerDeviceBusy));
    assert_eq!(ctx.write_single_register(7, 1).await.unwrap(), Ok(()));

    let deadline = Deadline::after(PATIENCE);
    let mut seen_partial = false;
    loop {
        let state = ctx.read_holding_registers(6, 1).await.unwrap().unwrap()[0];
        let first = decode(
            &ctx.read_input_registers(1000, 11).await.unwrap().unwrap(),
            2,
        );
        let last = decode(
            &ctx.read_input_registers(1000 + 16 * 7, 11)
                .await
                .unwrap()
                .unwrap(),
            2,
        );
        if state == 0 {
            assert_ne!(last.time, 0);
            break;
        }
        seen_partial |= first.time != 0 && last.time == 0;
        deadline.tick().await;
    }
    assert!(
        started.elapsed() >= per_meter * 8,
        "{:?}",
        started.elapsed()
    );
    assert!(seen_partial, "readings appear as the bus is walked");
}

#[tokio::test]
async fn gateways_share_one_virtual_night() {
    let clock = SimClock::frozen(T0);
    let make = |unit_id: u8| MbgConfig {
        unit_id,
        clock: clock.clone(),
        ..config(0x0201)
    };
    let (north, north_meters) = gateway(make(1), 1);
    let (south, _) = gateway(make(2), 1);
    let server = serve_tcp_units(
        vec![north.clone().into(), south.clone().into()],
        "127.0.0.1:0",
    )
    .await
    .expect("serve");
    let mut ctx = connect(server.local_addr(), 1).await;
    program(&mut ctx, 0, &SlotConfig::for_meter(&north_meters[0])).await;
    read_out(&mut ctx).await;
    let evening = readings(&mut ctx, 1, 2).await[0];

    south.advance(8 * 3600);
    assert_eq!(north.snapshot().virtual_time, T0 + 8 * 3600);
    read_out(&mut ctx).await;
    let morning = readings(&mut ctx, 1, 2).await[0];
    assert_eq!(i64::from(morning.time), T0 + 8 * 3600);
    assert!(morning.raw >= evening.raw);
    ctx.set_slave(Slave(2));
    let clock_words = ctx.read_holding_registers(30, 2).await.unwrap().unwrap();
    assert_eq!(i64::from(u32_of(&clock_words)), T0 + 8 * 3600);
}

#[tokio::test]
async fn same_seed_same_time_same_indexes() {
    let read_at = async |t: i64| {
        let (mbg, meters) = gateway(config(0x0201), 3);
        mbg.set_time(t);
        let (_server, mut ctx) = serve(&mbg).await;
        program_all(&mut ctx, &meters).await;
        read_out(&mut ctx).await;
        readings(&mut ctx, 9, 2).await
    };
    let t = T0 + 17 * DAY + 5 * 3600;
    assert_eq!(read_at(t).await, read_at(t).await);
}

#[tokio::test]
async fn reboots_and_gateway_faults() {
    let (mbg, meters) = gateway(config(0x0201), 1);
    let (server, mut ctx) = serve(&mbg).await;
    program_all(&mut ctx, &meters).await;
    read_out(&mut ctx).await;

    // Power cycle: the list is in flash, the readings were in RAM.
    mbg.reboot();
    let state = ctx.read_holding_registers(3, 4).await.unwrap().unwrap();
    assert_eq!(state, vec![3, 0, 0, 0]);
    assert_eq!(readings(&mut ctx, 1, 2).await[0].time, 0);
    mbg.reboot_with_memory_loss();
    assert_eq!(ctx.read_holding_registers(3, 1).await.unwrap(), Ok(vec![0]));

    mbg.faults().set_latency(Duration::from_millis(60));
    let started = Instant::now();
    ctx.read_holding_registers(0, 1).await.unwrap().unwrap();
    assert!(started.elapsed() >= Duration::from_millis(60));
    mbg.faults().go_offline(None);
    let closed = timeout(PATIENCE, ctx.read_holding_registers(0, 1)).await;
    assert!(closed.expect("closed, not silent").is_err());
    mbg.faults().clear();
    let mut ctx = connect(server.local_addr(), 1).await;
    assert_eq!(
        ctx.read_holding_registers(0, 1).await.unwrap(),
        Ok(vec![0x4D47])
    );
}
