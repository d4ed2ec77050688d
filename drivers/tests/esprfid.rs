//! The esp-rfid driver against the simulated controller, through a real broker: what
//! it writes is what the device stores, and it believes only the list read back.

use std::time::Duration;

use gardien_drivers::esprfid::EspRfid;
use gardien_drivers::{
    Credential, DeviceRole, DriverError, Entry, Fingerprint, LockController, MqttChannel, Registry,
    Validity,
};
use gardien_simulators::broker::{BrokerOptions, EmbeddedBroker};
use gardien_simulators::esprfid::{
    EspRfidConfig, EspRfidDevice, EspRfidFaults, MqttBroker, UidFormat, UserlistShape,
};
use rumqttc::{AsyncClient, Event, MqttOptions, Packet};

const IP: &str = "10.1.2.3";

/// The service side: one connection whose incoming messages feed the channel.
fn channel(broker: &EmbeddedBroker, id: &str) -> MqttChannel {
    let options = MqttOptions::new(id, "127.0.0.1", broker.addr().port());
    let (client, mut event_loop) = AsyncClient::new(options, 64);
    let channel = MqttChannel::new(client);
    let pump = channel.clone();
    tokio::spawn(async move {
        loop {
            match event_loop.poll().await {
                Ok(Event::Incoming(Packet::Publish(publish))) => {
                    pump.deliver(&publish.topic, &publish.payload)
                }
                Ok(_) => {}
                Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
    });
    channel
}

fn device(broker: &EmbeddedBroker, topic: &str, shape: UserlistShape) -> EspRfidDevice {
    EspRfidDevice::start(
        EspRfidConfig {
            topic: topic.into(),
            ip: IP.into(),
            hostname: format!("esp-{topic}"),
            relays: 4,
            userlist_shape: shape,
            uid_format: UidFormat::Padded,
            reconnect_delay: Duration::from_millis(100),
            ..EspRfidConfig::default()
        },
        MqttBroker::from(broker.addr()),
        EspRfidFaults::seeded(5),
    )
    .expect("simulated esp-rfid")
}

async fn driver(channel: &MqttChannel, topic: &str, model: &str) -> EspRfid {
    let registry = Registry::builtin().expect("profiles");
    let profile = registry
        .for_model(DeviceRole::LockController, model, None)
        .expect("esp-rfid profile");
    EspRfid::connect(profile, channel, &format!("{topic}@{IP}"))
        .await
        .expect("driver")
}

/// Waits until the device is subscribed to its commands.
async fn connected(device: &EspRfidDevice) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !device.snapshot().connected {
        assert!(
            tokio::time::Instant::now() < deadline,
            "device never connected"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn badge(hex: &str, doors: u16) -> Entry {
    let bytes = (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).expect("hex"))
        .collect();
    Entry {
        credential: Credential::Uid(bytes),
        doors,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_are_what_the_device_holds_in_both_list_shapes() {
    let broker = EmbeddedBroker::start(&BrokerOptions::default()).expect("broker");
    let channel = channel(&broker, "driver-1");
    for (topic, shape) in [
        ("stored", UserlistShape::Stored),
        ("readme", UserlistShape::Userfile),
    ] {
        let device = device(&broker, topic, shape);
        connected(&device).await;
        let mut esp = driver(&channel, topic, "esp-rfid").await;
        let empty = esp.identify().await.expect("identify an empty device");
        assert_eq!(empty.fingerprint, Fingerprint::ListDigest(0));
        assert_eq!(empty.used, Some(0));

        let claire = badge("04A22B91", 0b1001);
        let dates = Validity {
            since: 1_767_225_600,
            until: 1_798_761_600,
        };
        esp.add_valid(&claire, Some(dates)).await.expect("add");
        esp.add(&badge("04112233445566", 0b0001))
            .await
            .expect("add");
        let users = device.snapshot().users;
        assert_eq!(users[1].uid, "04a22b91");
        assert_eq!(users[1].acctype, [1, 0, 0, 1], "relays 1 and 4");
        assert_eq!(
            (users[1].validsince, users[1].validuntil),
            (dates.since, dates.until)
        );
        assert_eq!(users[0].validuntil, 4_102_444_800, "no end date: 2100");

        let table = esp.read_table().await.expect("list");
        let entries: Vec<Entry> = table.into_iter().map(|stored| stored.entry).collect();
        assert_eq!(
            entries,
            [badge("04112233445566", 1), claire.clone()],
            "{topic}"
        );

        esp.remove(&claire.credential).await.expect("remove");
        assert_eq!(esp.read_table().await.expect("list").len(), 1);
        esp.open_door(1).await.expect("open");
        esp.delete_all().await.expect("delete all");
        assert!(esp.read_table().await.expect("list").is_empty());
        let pulses = device.snapshot().relay_pulses;
        assert!(
            pulses.iter().all(|p| *p == 1),
            "every relay pulsed once: {pulses:?}"
        );
        assert!(matches!(
            esp.open_door(5).await,
            Err(DriverError::Unsupported(_))
        ));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_device_fails_the_read_instead_of_looking_empty() {
    let broker = EmbeddedBroker::start(&BrokerOptions::default()).expect("broker");
    let channel = channel(&broker, "driver-2");
    let device = device(&broker, "silent", UserlistShape::Stored);
    connected(&device).await;
    let mut esp = driver(&channel, "silent", "esp-rfid").await;
    esp.add(&badge("04A22B91", 1)).await.expect("add");
    // Every command lost: no list, no configuration, so no claim that it is empty.
    device.faults().set_drop_commands(1.0);
    let read = esp.identify().await;
    assert!(matches!(read, Err(DriverError::Timeout { .. })), "{read:?}");
    device.faults().set_drop_commands(0.0);
    let identity = esp.identify().await.expect("identify");
    assert_eq!(identity.used, Some(1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unpadded_reader_gets_unpadded_users() {
    let broker = EmbeddedBroker::start(&BrokerOptions::default()).expect("broker");
    let channel = channel(&broker, "driver-3");
    let device = EspRfidDevice::start(
        EspRfidConfig {
            topic: "unpadded".into(),
            ip: IP.into(),
            uid_format: UidFormat::NoLeadingZeros,
            reconnect_delay: Duration::from_millis(100),
            ..EspRfidConfig::default()
        },
        MqttBroker::from(broker.addr()),
        EspRfidFaults::seeded(6),
    )
    .expect("device");
    connected(&device).await;
    let mut esp = driver(&channel, "unpadded", "esp-rfid-unpadded").await;
    esp.add(&badge("04A22B91", 1)).await.expect("add");
    assert_eq!(device.snapshot().users[0].uid, "4a22b91");
    let access = device.present(&[0x04, 0xA2, 0x2B, 0x91]).expect("present");
    assert!(access.access.opens(), "{access:?}");
    let table = esp.read_table().await.expect("list");
    assert_eq!(
        table[0].entry,
        badge("04A22B91", 1),
        "read back as the 4-byte uid"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lists_on_a_shared_topic_are_told_apart_whatever_their_shape() {
    let broker = EmbeddedBroker::start(&BrokerOptions::default()).expect("broker");
    let channel = channel(&broker, "driver-4");
    let mut devices = Vec::new();
    let mut drivers = Vec::new();
    for (i, shape) in [
        UserlistShape::Userfile,
        UserlistShape::Stored,
        UserlistShape::Userfile,
        UserlistShape::Stored,
    ]
    .into_iter()
    .enumerate()
    {
        let ip = format!("10.9.0.{}", i + 1);
        let device = EspRfidDevice::start(
            EspRfidConfig {
                topic: "shared".into(),
                ip: ip.clone(),
                hostname: format!("esp-{i}"),
                userlist_shape: shape,
                reconnect_delay: Duration::from_millis(100),
                ..EspRfidConfig::default()
            },
            MqttBroker::from(broker.addr()),
            EspRfidFaults::seeded(i as u64),
        )
        .expect("device");
        connected(&device).await;
        let registry = Registry::builtin().expect("profiles");
        let profile = registry
            .for_model(DeviceRole::LockController, "esp-rfid", None)
            .expect("profile");
        let mut esp = EspRfid::connect(profile, &channel, &format!("shared@{ip}"))
            .await
            .expect("driver");
        // Each device holds i + 1 badges of its own.
        for n in 0..=i {
            esp.add(&badge(&format!("04{i:02X}{n:04X}"), 1))
                .await
                .expect("add");
        }
        devices.push(device);
        drivers.push(esp);
    }
    // Read every list twice, all at once: the second time, self-naming devices are
    // read alongside the others.
    for _ in 0..2 {
        let reads = drivers.iter_mut().map(|esp| esp.identify());
        let identities = futures::future::join_all(reads).await;
        for (i, identity) in identities.into_iter().enumerate() {
            let identity = identity.expect("identify");
            assert_eq!(identity.used, Some(i as u16 + 1), "device {i}");
        }
    }
    drop(devices);
}
