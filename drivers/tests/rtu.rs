//! The drivers over Modbus RTU: the simulators serve one end of a pseudo-terminal pair,
//! the drivers open the other end as they would open a USB-RS485 adapter.

mod common;

use common::{
    card_entry, connect_to, kl8_profile, kl8_table, px2_profile, px2_table, sorted_entries, stored,
    uid_entry,
};
use gardien_drivers::{Applied, DeviceProfile, Endpoint, Fingerprint, LockController};
use gardien_simulators::{
    serve_rtu, Faults, Kl8Config, Kl8Device, PtyLink, Px2Config, Px2Device, Server,
};

/// The simulators on the device end of a fresh pty link, at the profiles' baud rate.
fn bus(link: &PtyLink, devices: Vec<gardien_simulators::AnyDevice>) -> Server {
    let path = link.device_path().to_string_lossy().into_owned();
    serve_rtu(tokio_serial::new(path, 9600), devices).expect("serve RTU on the pty")
}

fn endpoint(link: &PtyLink, profile: &DeviceProfile) -> Endpoint {
    let path = link
        .client_path()
        .to_str()
        .expect("a UTF-8 pty path")
        .to_owned();
    let endpoint = Endpoint::rtu(
        &path,
        profile.modbus_settings().expect("a Modbus profile").serial,
    )
    .expect("a serial endpoint");
    assert_eq!(
        endpoint,
        Endpoint::Rtu {
            path,
            serial: profile.modbus_settings().expect("a Modbus profile").serial
        }
    );
    endpoint
}

async fn rtu_driver(link: &PtyLink, profile: &DeviceProfile, unit: u8) -> Box<dyn LockController> {
    connect_to(profile, &endpoint(link, profile), unit).await
}

#[tokio::test]
async fn px2_over_rtu() {
    let link = PtyLink::new().expect("pty link");
    let px2 = Px2Device::new(
        Px2Config {
            capacity: 100,
            seed: Some(1),
            ..Px2Config::default()
        },
        Faults::seeded(1),
    );
    let _server = bus(&link, vec![px2.clone().into()]);
    let profile = px2_profile();
    let mut driver = rtu_driver(&link, &profile, 1).await;

    let identity = driver.identify().await.expect("identify over RTU");
    assert_eq!(identity.model_code, 0x5032);
    assert_eq!(identity.capacity, 100);
    assert_eq!(identity.used, Some(0));

    let badge = uid_entry(&[0x04, 0xA2, 0x2B, 0x91], 0b11);
    let long = uid_entry(&[1, 2, 3, 4, 5, 6, 7, 8, 9, 10], 0b100);
    let before = driver.transactions();
    assert_eq!(driver.add(&badge).await, Ok(Applied::Done));
    println!(
        "PX-2 over RTU: {} transactions for one add",
        driver.transactions() - before
    );
    assert_eq!(driver.add(&long).await, Ok(Applied::Done));
    assert_eq!(driver.add(&badge).await, Ok(Applied::AlreadyPresent));

    let table = stored(&driver.read_table().await.expect("read the table"));
    assert_eq!(table, px2_table(&px2));
    assert_eq!(
        sorted_entries(&table),
        sorted_entries(&[(0, badge.clone()), (0, long.clone())])
    );

    assert_eq!(driver.remove(&badge.credential).await, Ok(Applied::Done));
    assert_eq!(
        driver.remove(&badge.credential).await,
        Ok(Applied::NotFound)
    );
    let table = stored(&driver.read_table().await.expect("read the table"));
    assert_eq!(table, px2_table(&px2));
    assert_eq!(sorted_entries(&table), vec![long.clone()]);
    let identity = driver.identify().await.expect("identify");
    assert_eq!(
        identity.fingerprint,
        Fingerprint::Digest {
            digest: gardien_drivers::digest::table_digest([&long]),
            boot_counter: 1
        }
    );
}

#[tokio::test]
async fn kl8_over_rtu() {
    let link = PtyLink::new().expect("pty link");
    let kl8 = Kl8Device::new(
        Kl8Config {
            capacity: 50,
            ..Kl8Config::default()
        },
        Faults::seeded(2),
    );
    let _server = bus(&link, vec![kl8.clone().into()]);
    let profile = kl8_profile();
    let mut driver = rtu_driver(&link, &profile, 17).await;
    let identity = driver.identify().await.expect("identify over RTU");
    assert_eq!(identity.model_code, 0x4B38);
    assert_eq!(identity.fingerprint, Fingerprint::ChangeCounter(0));
    assert_eq!(
        driver.add(&card_entry(2_435_555_844, 0b10)).await,
        Ok(Applied::Done)
    );
    assert_eq!(driver.add(&card_entry(7, 0b1)).await, Ok(Applied::Done));
    let table = stored(&driver.read_table().await.expect("read the table"));
    assert_eq!(table, kl8_table(&kl8));
    assert_eq!(
        driver.remove(&gardien_drivers::Credential::Card(7)).await,
        Ok(Applied::Done)
    );
    driver.persist().await.expect("save over RTU");
    assert_eq!(
        sorted_entries(&kl8_table(&kl8)),
        vec![card_entry(2_435_555_844, 0b10)]
    );
    assert_eq!(kl8.snapshot().saved, kl8.snapshot().records);
}

/// A PX-2 at address 1 and a KL-8 at address 17 on one line: each driver talks to its
/// own device, and neither's traffic disturbs the other. One serial port is opened by
/// one driver at a time, as one adapter is used by one process.
#[tokio::test]
async fn two_devices_on_one_bus() {
    let link = PtyLink::new().expect("pty link");
    let px2 = Px2Device::new(
        Px2Config {
            capacity: 64,
            seed: Some(3),
            ..Px2Config::default()
        },
        Faults::seeded(3),
    );
    let kl8 = Kl8Device::new(
        Kl8Config {
            capacity: 64,
            ..Kl8Config::default()
        },
        Faults::seeded(4),
    );
    let _server = bus(&link, vec![px2.clone().into(), kl8.clone().into()]);
    let (px2_profile, kl8_profile) = (px2_profile(), kl8_profile());

    for round in 0u8..2 {
        {
            let mut driver = rtu_driver(&link, &px2_profile, 1).await;
            let identity = driver.identify().await.expect("PX-2 answers at 1");
            assert_eq!(identity.model_code, 0x5032);
            assert_eq!(
                driver.add(&uid_entry(&[0xA0, round], 1)).await,
                Ok(Applied::Done)
            );
            let table = stored(&driver.read_table().await.expect("read PX-2 table"));
            assert_eq!(table, px2_table(&px2));
        }
        {
            let mut driver = rtu_driver(&link, &kl8_profile, 17).await;
            let identity = driver.identify().await.expect("KL-8 answers at 17");
            assert_eq!(identity.model_code, 0x4B38);
            assert_eq!(
                driver.add(&card_entry(1000 + u32::from(round), 2)).await,
                Ok(Applied::Done)
            );
            let table = stored(&driver.read_table().await.expect("read KL-8 table"));
            assert_eq!(table, kl8_table(&kl8));
        }
    }
    assert_eq!(
        sorted_entries(&px2_table(&px2)),
        vec![uid_entry(&[0xA0, 0], 1), uid_entry(&[0xA0, 1], 1)]
    );
    assert_eq!(
        sorted_entries(&kl8_table(&kl8)),
        vec![card_entry(1000, 2), card_entry(1001, 2)]
    );

    // The wrong profile at an address is told apart: the KL-8 profile at the PX-2's
    // address finds a PX-2.
    let mut driver = rtu_driver(&link, &kl8_profile, 1).await;
    assert!(matches!(
        driver.identify().await,
        Err(gardien_drivers::DriverError::WrongDevice(_))
    ));
}
