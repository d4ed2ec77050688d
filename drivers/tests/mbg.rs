//! The MBG-250 driver against the simulated gateway, over real sockets (and a
//! pseudo-terminal for RTU): the firmware line picks the profile, slots are written and
//! read back, a read-out is triggered and waited for, and 250 readings come back in
//! 32 requests with the values the meters on the simulated bus show.

mod common;

use std::time::Duration;

use common::{serve_px2, tcp, PATIENCE};
use gardien_drivers::mbg::status_bits;
use gardien_drivers::{
    DeviceRole, DriverError, Endpoint, GatewayStatus, MeterGateway, Registry, SlotMeter,
    SlotReading,
};
use gardien_simulators::mbg::population;
use gardien_simulators::{
    serve_rtu, serve_tcp, BusMeter, Faults, MbgConfig, MbgDevice, PtyLink, Px2Config, SimClock,
    TcpServer,
};
use tokio::time::timeout;

/// 2026-01-10T02:00:00Z: where the virtual clock stands (frozen).
const T0: i64 = 1_768_010_400;
/// 2026-01-01T00:00:00 in Paris: the meters' installation, where their initial indexes hold.
const INSTALLED: i64 = 1_767_222_000;
const DAY: i64 = 86_400;
/// Beyond the read-out's expected duration, before `wait_readout` gives up.
const GRACE: Duration = Duration::from_secs(10);

fn registry() -> Registry {
    Registry::builtin().expect("embedded profiles are valid")
}

/// A gateway of `firmware` (0x0104 or 0x0201) on a frozen clock, with `count` meters of
/// a generated building on its bus (none programmed).
fn gateway(firmware: u16, count: usize, seed: u64) -> (MbgDevice, Vec<BusMeter>) {
    let device = MbgDevice::new(
        MbgConfig {
            firmware,
            ms_per_meter: Duration::from_millis(1),
            clock: SimClock::frozen(T0),
            name: Some(format!("fw{:x}", firmware >> 8)),
            ..MbgConfig::default()
        },
        Faults::seeded(seed),
    );
    let flats = count.div_ceil(3) as u32;
    let mut meters = population(seed, 10_000_001, flats, INSTALLED);
    meters.truncate(count);
    device
        .add_meters(meters.iter().cloned())
        .expect("meters on the bus");
    (device, meters)
}

async fn serve(device: &MbgDevice) -> TcpServer {
    serve_tcp(device.clone(), "127.0.0.1:0")
        .await
        .expect("serve the MBG-250 on TCP")
}

async fn connect(endpoint: &Endpoint) -> (MeterGateway, GatewayStatus) {
    timeout(
        PATIENCE,
        MeterGateway::connect(&registry(), "MBG-250", endpoint, None),
    )
    .await
    .expect("connect within the patience")
    .expect("connect to the MBG-250")
}

fn slot_meter(meter: &BusMeter) -> SlotMeter {
    SlotMeter {
        id: meter.id,
        manufacturer: meter.manufacturer.clone(),
        version: meter.version,
        medium: meter.medium,
    }
}

/// Programs `meters` into slots 0.. with one write each.
async fn program(driver: &mut MeterGateway, meters: &[BusMeter]) {
    let before = driver.transactions();
    for (slot, meter) in (0u16..).zip(meters) {
        driver
            .write_slot(slot, Some(&slot_meter(meter)))
            .await
            .unwrap_or_else(|e| panic!("write slot {slot}: {e}"));
    }
    assert_eq!(
        driver.transactions() - before,
        meters.len() as u64,
        "one write per slot"
    );
}

/// Triggers a read-out and waits for its end; answers the status after it.
async fn read_out(driver: &mut MeterGateway) -> GatewayStatus {
    let before = driver.status().await.expect("status before the read-out");
    driver.start_readout().await.expect("trigger");
    let after = timeout(PATIENCE, driver.wait_readout(&before, GRACE))
        .await
        .expect("read-out within the patience")
        .expect("read-out ends");
    assert!(!after.running);
    after
}

/// The value a meter shows at `t`, as the simulator computes it.
fn truth(device: &MbgDevice, meter: &BusMeter, t: i64) -> f64 {
    device
        .meter_value_at(meter.id, t)
        .expect("meter on the bus")
        .value()
}

/// Checks a reading against the meter's index: exact (to f64 rounding) on 2.x, to
/// float32 precision on 1.x.
fn assert_value(reading: &SlotReading, expected: f64, major: u8, meter: &BusMeter) {
    let value = reading
        .value
        .clone()
        .unwrap_or_else(|e| panic!("slot {}: {e}", reading.slot));
    let tolerance = if major == 1 {
        // A float32 holds 24 bits of mantissa: relative error at most 2^-24.
        expected.abs() * 6e-8 + 1e-9
    } else {
        expected.abs() * 1e-12 + 1e-12
    };
    assert!(
        (value - expected).abs() <= tolerance,
        "meter {} (slot {}, firmware {major}.x): read {value}, bus shows {expected}",
        meter.id,
        reading.slot
    );
    if major == 1 {
        assert_eq!(value, f64::from(expected as f32), "meter {}", meter.id);
    }
}

#[tokio::test]
async fn the_firmware_line_picks_the_profile_and_other_devices_are_refused() {
    for (firmware, profile, major) in [(0x0104, "mbg250-fw1", 1), (0x0201, "mbg250-fw2", 2)] {
        let (device, _) = gateway(firmware, 3, 1);
        let server = serve(&device).await;
        let (driver, status) = connect(&tcp(&server)).await;
        assert_eq!(driver.profile().id, profile);
        assert_eq!(status.profile_id, profile);
        assert_eq!(status.firmware, (major, firmware as u8));
        assert_eq!(status.capacity, 250);
        assert_eq!(status.configured, 0);
        assert_eq!(status.last_readout, None);
        assert!(!status.running);
        // Identity, capacity, read-out state and time: one request.
        assert_eq!(driver.transactions(), 1);
    }

    // A PX-2 lock controller at the gateway's address: nothing is written to it.
    let (px2, server) = serve_px2(Px2Config::default(), Faults::seeded(2)).await;
    let before = px2.snapshot();
    let refused = MeterGateway::connect(&registry(), "MBG-250", &tcp(&server), None).await;
    match refused {
        Err(DriverError::WrongDevice(why)) => {
            assert!(why.contains("MBG-250"), "{why}");
            assert!(why.contains("0x5032"), "{why}");
        }
        Err(other) => panic!("expected WrongDevice, got {other}"),
        Ok(_) => panic!("a PX-2 was taken for an MBG-250"),
    }
    assert_eq!(px2.snapshot(), before);

    // A model no profile describes is refused before anything is sent.
    let (device, _) = gateway(0x0201, 1, 3);
    let server = serve(&device).await;
    let unknown = MeterGateway::connect(&registry(), "MBG-999", &tcp(&server), None).await;
    assert!(
        matches!(unknown, Err(DriverError::Unsupported(_))),
        "{:?}",
        unknown.err()
    );
    // The profile of a gateway is found by role and model.
    assert!(registry()
        .for_model(DeviceRole::MeterGateway, "MBG-250", Some(1))
        .is_some_and(|p| p.id == "mbg250-fw1"));
}

#[tokio::test]
async fn slots_written_are_read_back_as_the_gateway_holds_them() {
    let (device, meters) = gateway(0x0201, 9, 4);
    let server = serve(&device).await;
    let (mut driver, _) = connect(&tcp(&server)).await;

    // Slots 0-5, then 40 and 249 (the last), with a gap.
    program(&mut driver, &meters[..6]).await;
    let far = [(40u16, &meters[6]), (249u16, &meters[7])];
    for (slot, meter) in far {
        driver
            .write_slot(slot, Some(&slot_meter(meter)))
            .await
            .expect("write a far slot");
    }
    // Slot 2 emptied, slot 3 reprogrammed with another meter: one write each.
    let before = driver.transactions();
    driver.write_slot(2, None).await.expect("empty slot 2");
    driver
        .write_slot(3, Some(&slot_meter(&meters[8])))
        .await
        .expect("reprogram slot 3");
    assert_eq!(driver.transactions() - before, 2);

    let status = driver.status().await.expect("status");
    assert_eq!(status.configured, 7);
    let read = driver
        .read_slots(status.capacity)
        .await
        .expect("read slots");
    let expected: Vec<(u16, SlotMeter)> = vec![
        (0, slot_meter(&meters[0])),
        (1, slot_meter(&meters[1])),
        (3, slot_meter(&meters[8])),
        (4, slot_meter(&meters[4])),
        (5, slot_meter(&meters[5])),
        (40, slot_meter(&meters[6])),
        (249, slot_meter(&meters[7])),
    ];
    assert_eq!(read, expected);
    // What the simulator holds, as its manual encodes it.
    let held: Vec<(u16, u32, u8, u8)> = device
        .snapshot()
        .slots
        .iter()
        .filter(|(_, s)| s.active)
        .map(|(slot, s)| (*slot, s.id, s.version, s.medium))
        .collect();
    let wanted: Vec<(u16, u32, u8, u8)> = expected
        .iter()
        .map(|(slot, m)| (*slot, m.id, m.version, m.medium))
        .collect();
    assert_eq!(held, wanted);
    for (slot, meter) in &expected {
        let config = device.snapshot().slots[..]
            .iter()
            .find(|(s, _)| s == slot)
            .map(|(_, c)| *c)
            .expect("slot held");
        assert_eq!(
            config.manufacturer,
            gardien_drivers::mbg::pack_manufacturer(&meter.manufacturer).expect("3 letters")
        );
    }
    // 250 slots × 8 registers, at most 125 per read.
    let before = driver.transactions();
    driver.read_slots(250).await.expect("read slots");
    assert_eq!(driver.transactions() - before, 16);
}

/// 250 meters programmed, read out and read back in ceil(250 / 8) = 32 requests.
async fn full_gateway(firmware: u16) {
    let major = (firmware >> 8) as u8;
    let (device, meters) = gateway(firmware, 250, 5 + u64::from(major));
    let server = serve(&device).await;
    let (mut driver, status) = connect(&tcp(&server)).await;
    assert_eq!(status.profile_id, format!("mbg250-fw{major}"));
    program(&mut driver, &meters).await;
    assert_eq!(device.snapshot().configured, 250);

    for night in 0..2 {
        let t = T0 + night * DAY;
        let after = read_out(&mut driver).await;
        assert_eq!(after.configured, 250);
        assert_eq!(after.last_readout, Some(t as u32));

        let slots: Vec<u16> = (0..250).rev().collect();
        let before = driver.transactions();
        let readings = driver.read_readings(&slots).await.expect("read readings");
        assert_eq!(
            driver.transactions() - before,
            32,
            "250 readings of 11 used registers in a stride of 16: 8 slots per request"
        );
        assert_eq!(readings.len(), 250);
        for (reading, meter) in readings.iter().zip(&meters) {
            assert_eq!(reading.status, 0, "meter {}", meter.id);
            assert_eq!(reading.id_echo, Some(meter.id));
            assert_eq!(reading.time, Some(t as u32));
            assert_eq!(reading.unit_code, meter.unit.code());
            assert_value(reading, truth(&device, meter, t), major, meter);
        }
        device.advance(DAY);
    }
}

#[tokio::test]
async fn a_full_gateway_of_firmware_1_is_read_in_32_requests() {
    full_gateway(0x0104).await;
}

#[tokio::test]
async fn a_full_gateway_of_firmware_2_is_read_in_32_requests() {
    full_gateway(0x0201).await;
}

#[tokio::test]
async fn stale_slots_silent_meters_and_status_bits_are_visible() {
    for firmware in [0x0104, 0x0201] {
        let major = (firmware >> 8) as u8;
        let (device, meters) = gateway(firmware, 6, 9);
        let server = serve(&device).await;
        let (mut driver, _) = connect(&tcp(&server)).await;
        let (a, b, c) = (&meters[0], &meters[1], &meters[3]);
        program(&mut driver, &[a.clone(), b.clone()]).await;
        read_out(&mut driver).await;
        let first = driver.read_readings(&[0, 1]).await.expect("readings");
        assert_eq!(first[0].id_echo, Some(a.id));
        assert_eq!(first[1].id_echo, Some(b.id));

        // Slot 0 now holds meter C; until a read-out reads it, it shows A's data.
        driver
            .write_slot(0, Some(&slot_meter(c)))
            .await
            .expect("reprogram slot 0");
        let stale = driver.read_readings(&[0]).await.expect("readings");
        assert_eq!(stale[0].id_echo, Some(a.id), "firmware {major}.x");
        assert_eq!(stale[0].value, first[0].value);
        assert_eq!(stale[0].time, Some(T0 as u32));

        // Next night: B is silent, C reports a leak and a low battery.
        device.set_answering(b.id, false).expect("B on the bus");
        device
            .force_status(c.id, status_bits::LEAK | status_bits::BATTERY_LOW)
            .expect("C on the bus");
        device.advance(DAY);
        let after = read_out(&mut driver).await;
        assert_eq!(after.last_readout, Some((T0 + DAY) as u32));
        let next = driver.read_readings(&[0, 1]).await.expect("readings");
        assert_eq!(next[0].id_echo, Some(c.id));
        assert_eq!(next[0].time, Some((T0 + DAY) as u32));
        assert_eq!(
            next[0].status,
            status_bits::LEAK | status_bits::BATTERY_LOW,
            "firmware {major}.x"
        );
        assert_value(&next[0], truth(&device, c, T0 + DAY), major, c);
        // B did not answer: bit 0, and its previous index and time kept.
        assert_eq!(
            next[1].status & status_bits::NO_ANSWER,
            status_bits::NO_ANSWER
        );
        assert_eq!(next[1].id_echo, Some(b.id));
        assert_eq!(next[1].time, Some(T0 as u32));
        assert_eq!(next[1].value, first[1].value);
        assert_value(&next[1], truth(&device, b, T0), major, b);

        // A slot never read: time absent.
        driver
            .write_slot(7, Some(&slot_meter(&meters[5])))
            .await
            .expect("program slot 7");
        let never = driver.read_readings(&[7]).await.expect("readings");
        assert_eq!((never[0].time, never[0].id_echo), (None, Some(0)));
    }
}

#[tokio::test]
async fn over_rtu_on_a_pseudo_terminal() {
    let link = PtyLink::new().expect("pty link");
    let (device, meters) = gateway(0x0104, 5, 12);
    let path = link.device_path().to_string_lossy().into_owned();
    let _server = serve_rtu(tokio_serial::new(path, 9600), vec![device.clone().into()])
        .expect("serve RTU on the pty");
    let profile = registry()
        .for_model(DeviceRole::MeterGateway, "MBG-250", None)
        .expect("an MBG-250 profile")
        .clone();
    let client = link.client_path().to_str().expect("UTF-8 path").to_owned();
    let endpoint = Endpoint::rtu(
        &client,
        profile.modbus_settings().expect("a Modbus profile").serial,
    )
    .expect("serial endpoint");
    let (mut driver, status) = connect(&endpoint).await;
    assert_eq!(status.profile_id, "mbg250-fw1");

    program(&mut driver, &meters).await;
    let read = driver
        .read_slots(status.capacity)
        .await
        .expect("read slots");
    let expected: Vec<(u16, SlotMeter)> = (0u16..).zip(meters.iter().map(slot_meter)).collect();
    assert_eq!(read, expected);

    let after = read_out(&mut driver).await;
    assert_eq!(after.last_readout, Some(T0 as u32));
    let slots: Vec<u16> = (0..5).collect();
    let readings = driver.read_readings(&slots).await.expect("readings");
    for (reading, meter) in readings.iter().zip(&meters) {
        assert_eq!(reading.id_echo, Some(meter.id));
        assert_eq!(reading.time, Some(T0 as u32));
        assert_value(reading, truth(&device, meter, T0), 1, meter);
    }
    assert_eq!(driver.read_clock().await.expect("clock"), T0 as u32);
}
