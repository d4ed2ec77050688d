//! RTU over a pseudo-terminal link, opened on both ends with tokio-serial like real
//! serial adapters.

mod common;

use std::time::Duration;

use common::mbg::{config, gateway, read_out, readings, T0};
use common::{mailbox, Deadline, PATIENCE};
use gardien_simulators::px2::command;
use gardien_simulators::{
    serve_rtu, Faults, Kl8Config, Kl8Device, MbgConfig, PtyLink, Px2Config, Px2Device, SlotConfig,
};
use tokio::time::timeout;
use tokio_modbus::client::{rtu, Context};
use tokio_modbus::prelude::*;
use tokio_serial::SerialStream;

fn client(link: &PtyLink, unit: u8) -> Context {
    let port = tokio_serial::new(link.client_path().to_string_lossy(), 19200);
    let serial = SerialStream::open(&port).expect("open client end");
    rtu::attach_slave(serial, Slave(unit))
}

#[tokio::test]
async fn px2_round_trip_over_rtu() {
    let link = PtyLink::new().expect("pty link");
    let px2 = Px2Device::new(
        Px2Config {
            unit_id: 5,
            ..Px2Config::default()
        },
        Faults::seeded(1),
    );
    let _server = serve_rtu(
        tokio_serial::new(link.device_path().to_string_lossy(), 19200),
        [px2.clone().into()],
    )
    .expect("serve");
    let mut ctx = client(&link, 5);

    let identity = timeout(PATIENCE, ctx.read_holding_registers(0, 3)).await;
    assert_eq!(identity.unwrap().unwrap(), Ok(vec![0x5032, 0x0203, 2000]));

    ctx.write_multiple_registers(10, &mailbox(9, command::ADD, "04A22B91", 1))
        .await
        .unwrap()
        .unwrap();
    let deadline = Deadline::after(PATIENCE);
    let outcome = loop {
        let words = ctx.read_holding_registers(20, 3).await.unwrap().unwrap();
        if words[0] == 9 {
            break words;
        }
        deadline.tick().await;
    };
    assert_eq!(outcome, vec![9, 0, 0]);
    assert_eq!(px2.snapshot().used, 1);
}

#[tokio::test]
async fn several_devices_share_one_bus() {
    let link = PtyLink::new().expect("pty link");
    let px2 = Px2Device::new(Px2Config::default(), Faults::seeded(1));
    let kl8 = Kl8Device::new(Kl8Config::default(), Faults::seeded(2));
    let _server = serve_rtu(
        tokio_serial::new(link.device_path().to_string_lossy(), 9600),
        [px2.into(), kl8.into()],
    )
    .expect("serve");
    let mut ctx = client(&link, 1);

    let model = timeout(PATIENCE, ctx.read_holding_registers(0, 1)).await;
    assert_eq!(model.unwrap().unwrap(), Ok(vec![0x5032]));
    ctx.set_slave(Slave(17));
    let model = timeout(PATIENCE, ctx.read_holding_registers(0, 1)).await;
    assert_eq!(model.unwrap().unwrap(), Ok(vec![0x4B38]));

    // Nobody answers address 3: the client hears silence, then the bus still works.
    ctx.set_slave(Slave(3));
    let silent = timeout(Duration::from_millis(200), ctx.read_holding_registers(0, 1)).await;
    assert!(silent.is_err(), "address 3 answered: {silent:?}");
    ctx.set_slave(Slave(17));
    let model = timeout(PATIENCE, ctx.read_holding_registers(0, 1)).await;
    assert_eq!(model.unwrap().unwrap(), Ok(vec![0x4B38]));
}

#[tokio::test]
async fn faults_on_a_serial_line() {
    let link = PtyLink::new().expect("pty link");
    let px2 = Px2Device::new(Px2Config::default(), Faults::seeded(4));
    let _server = serve_rtu(
        tokio_serial::new(link.device_path().to_string_lossy(), 19200),
        [px2.clone().into()],
    )
    .expect("serve");
    let mut ctx = client(&link, 1);

    px2.faults().set_drop_probability(1.0);
    let silent = timeout(Duration::from_millis(200), ctx.read_holding_registers(0, 1)).await;
    assert!(silent.is_err(), "answered: {silent:?}");
    px2.faults().clear();

    px2.faults()
        .set_exception(Some((ExceptionCode::ServerDeviceBusy, 1.0)));
    let busy = timeout(PATIENCE, ctx.read_holding_registers(0, 1)).await;
    assert_eq!(busy.unwrap().unwrap(), Err(ExceptionCode::ServerDeviceBusy));
    px2.faults().clear();
    let model = timeout(PATIENCE, ctx.read_holding_registers(0, 1)).await;
    assert_eq!(model.unwrap().unwrap(), Ok(vec![0x5032]));
}

#[tokio::test]
async fn line_noise_does_not_stop_the_server() {
    use tokio::io::AsyncWriteExt as _;

    let link = PtyLink::new().expect("pty link");
    let px2 = Px2Device::new(Px2Config::default(), Faults::seeded(4));
    let _server = serve_rtu(
        tokio_serial::new(link.device_path().to_string_lossy(), 19200),
        [px2.into()],
    )
    .expect("serve");
    {
        let port = tokio_serial::new(link.client_path().to_string_lossy(), 19200);
        let mut raw = SerialStream::open(&port).expect("open client end");
        raw.write_all(&[0x55; 600]).await.unwrap();
        raw.flush().await.unwrap();
    }
    let deadline = Deadline::after(PATIENCE);
    loop {
        // A fresh client each try: a lost or garbled exchange leaves one out of step.
        let mut ctx = client(&link, 1);
        let attempt = timeout(Duration::from_millis(100), ctx.read_holding_registers(0, 1)).await;
        if let Ok(Ok(Ok(words))) = attempt {
            assert_eq!(words, vec![0x5032]);
            break;
        }
        drop(ctx);
        deadline.tick().await;
    }
}

#[tokio::test]
async fn mbg_read_out_over_rtu() {
    let link = PtyLink::new().expect("pty link");
    let (mbg, meters) = gateway(
        MbgConfig {
            unit_id: 9,
            ..config(0x0104)
        },
        1,
    );
    let _server = serve_rtu(
        tokio_serial::new(link.device_path().to_string_lossy(), 38400),
        [mbg.clone().into()],
    )
    .expect("serve");
    let port = tokio_serial::new(link.client_path().to_string_lossy(), 38400);
    let mut ctx = rtu::attach_slave(SerialStream::open(&port).expect("open"), Slave(9));

    let identity = timeout(PATIENCE, ctx.read_holding_registers(0, 3)).await;
    assert_eq!(identity.unwrap().unwrap(), Ok(vec![0x4D47, 0x0104, 250]));
    for (slot, meter) in (0u16..).zip(&meters) {
        let words = SlotConfig::for_meter(meter).registers();
        timeout(
            PATIENCE,
            ctx.write_multiple_registers(100 + 8 * slot, &words),
        )
        .await
        .expect("answer")
        .unwrap()
        .unwrap();
    }
    read_out(&mut ctx).await;
    for (meter, r) in meters.iter().zip(readings(&mut ctx, 3, 1).await) {
        let truth = mbg.meter_value_at(meter.id, T0).unwrap().value();
        assert_eq!(r.float, truth as f32);
        assert_eq!((r.id_echo, i64::from(r.time)), (meter.id, T0));
    }
}
