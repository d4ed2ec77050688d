//! End to end over a real broker: the API, the engine, gardien's MQTT connection and
//! simulated esp-rfid controllers. Every scenario runs through the embedded broker
//! (rumqttd, in a child process so it can be restarted) and, with the `external`
//! feature, through Mosquitto with passwords and an ACL.

mod common;

use std::time::Duration;

use common::mqtt::{BrokerKind, BrokerProcess};
use common::{eventually, eventually_async, Client, Fixture, TestServer};
use gardien::mqtt::Mqtt;
use gardien_simulators::esprfid::{EspRfidConfig, EspRfidDevice, EspRfidFaults, UidFormat};
use serde_json::{json, Value};

const TOPIC: &str = "tilleuls-portes";
const IPS: [&str; 2] = ["10.0.0.11", "10.0.0.12"];
const CLAIRE: &str = "04A22B91";
const MARC: &str = "04112233445566";

struct Site {
    broker: BrokerProcess,
    server: TestServer,
    mqtt: Mqtt,
    admin: Client,
    f: Fixture,
    controllers: [i64; 2],
    devices: Vec<EspRfidDevice>,
    /// Profile opening hall A (controller 1, relay 1) and hall C (controller 2, relay 1).
    both: i64,
}

fn device_config(ip: &str, index: usize, uid_format: UidFormat) -> EspRfidConfig {
    EspRfidConfig {
        topic: TOPIC.into(),
        ip: ip.into(),
        hostname: format!("esp-porte-{index}"),
        door_name: format!("Porte {index}"),
        relays: 3,
        heartbeat_seconds: 180,
        uid_format,
        reconnect_delay: Duration::from_millis(200),
        ..EspRfidConfig::default()
    }
}

/// Two esp-rfid controllers sharing one topic (as the project recommends), each with
/// a lock, and a profile opening both.
async fn site(kind: BrokerKind, uid_format: UidFormat) -> Site {
    let broker = BrokerProcess::start(kind);
    let mut server = TestServer::start().await;
    let mqtt = Mqtt::start(server.store.clone(), &broker.service_config(), "test")
        .await
        .expect("MQTT connection");
    server.start_engine_with(common::test_sync_config(), Some(mqtt.channel().clone()));
    let admin = server.admin().await;
    let f = common::fixture(&admin, "Les Tilleuls").await;
    // The profile says how the reader writes uids, so users are stored that way.
    let model = match uid_format {
        UidFormat::Padded => "esp-rfid",
        UidFormat::NoLeadingZeros => "esp-rfid-unpadded",
    };
    let first = admin
        .put(
            &f.path(&format!("/controllers/{}", f.controller)),
            json!({ "name": "Porte 1", "model": model, "transport": "mqtt",
                    "address": format!("{TOPIC}@{}", IPS[0]) }),
        )
        .await;
    assert_eq!(first.status, 200, "{}", first.body);
    let second = admin
        .create(
            &f.path("/controllers"),
            json!({ "name": "Porte 2", "model": model, "transport": "mqtt",
                    "address": format!("{TOPIC}@{}", IPS[1]) }),
        )
        .await;
    let hall_c = admin
        .create(
            &f.path("/locks"),
            json!({ "name": "Hall C", "kind": "door", "controller_id": second, "door_number": 1 }),
        )
        .await;
    let both = admin
        .create(
            &f.path("/profiles"),
            json!({ "name": "Tous halls", "lock_ids": [f.locks[0], hall_c] }),
        )
        .await;
    let devices = IPS
        .iter()
        .enumerate()
        .map(|(i, ip)| {
            EspRfidDevice::start(
                device_config(ip, i + 1, uid_format),
                broker.device_broker(),
                EspRfidFaults::seeded(i as u64 + 1),
            )
            .expect("simulated esp-rfid")
        })
        .collect();
    Site {
        broker,
        server,
        mqtt,
        admin,
        controllers: [f.controller, second],
        f,
        devices,
        both,
    }
}

fn uids(device: &EspRfidDevice) -> Vec<String> {
    device
        .snapshot()
        .users
        .into_iter()
        .map(|user| user.uid)
        .collect()
}

async fn add_badge(site: &Site, identifier: &str, profile: i64) -> i64 {
    site.admin
        .create(
            &site.f.path("/keys"),
            json!({ "kind": "vigik_badge", "identifier": identifier, "profile_ids": [profile] }),
        )
        .await
}

async fn sync_report(site: &Site, key: i64) -> Value {
    site.admin
        .get(&site.f.path(&format!("/keys/{key}/sync")))
        .await
        .body
}

async fn wait_confirmed(site: &Site, key: i64, what: &str) -> Value {
    let path = site.f.path(&format!("/keys/{key}/sync"));
    eventually_async(
        30,
        what,
        || site.admin.get(&path),
        |response| {
            response.body["controllers"].as_array().is_some_and(|rows| {
                !rows.is_empty() && rows.iter().all(|row| row["state"] == "confirmed")
            })
        },
    )
    .await
    .body
}

async fn stop(site: Site) {
    site.mqtt.stop().await;
    site.server.stop().await;
}

async fn lost_badge_leaves_every_controller(kind: BrokerKind) {
    let site = site(kind, UidFormat::Padded).await;
    let claire = add_badge(&site, CLAIRE, site.both).await;
    let marc = add_badge(&site, MARC, site.f.profiles[0]).await;
    wait_confirmed(&site, claire, "Claire's badge on both controllers").await;
    wait_confirmed(&site, marc, "Marc's badge on controller 1").await;
    assert_eq!(uids(&site.devices[0]), ["04112233445566", "04a22b91"]);
    assert_eq!(uids(&site.devices[1]), ["04a22b91"]);
    // Profile A opens hall A (relay 1) and the gate (relay 3) of controller 1.
    let stored = site.devices[0].snapshot().users;
    assert_eq!(stored[0].acctype[..3], [1, 0, 1], "{stored:?}");

    let lost = site
        .admin
        .post(
            &site.f.path(&format!("/keys/{claire}/declare-lost")),
            json!({ "reason": "perdu" }),
        )
        .await;
    assert_eq!(lost.status, 200, "{}", lost.body);
    let report = wait_confirmed(&site, claire, "the removal read back on both").await;
    assert_eq!(report["summary"], "retiré de 2 centrales sur 2", "{report}");
    assert_eq!(uids(&site.devices[0]), ["04112233445566"]);
    assert!(uids(&site.devices[1]).is_empty());
    stop(site).await;
}

async fn dropped_commands_then_convergence(kind: BrokerKind) {
    let site = site(kind, UidFormat::Padded).await;
    let claire = add_badge(&site, CLAIRE, site.both).await;
    wait_confirmed(&site, claire, "Claire's badge programmed").await;

    // Controller 2 loses every command (low memory): its acks never come, and the
    // list it sends back still holds the badge.
    site.devices[1].faults().set_drop_commands(1.0);
    site.admin
        .post(
            &site.f.path(&format!("/keys/{claire}/declare-lost")),
            json!({ "reason": "volé" }),
        )
        .await;
    eventually(
        20,
        "two removals lost on controller 2",
        || site.devices[1].snapshot().commands_dropped,
        |dropped| *dropped >= 4,
    )
    .await;
    let report = sync_report(&site, claire).await;
    let rows = report["controllers"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let second = rows
        .iter()
        .find(|row| row["controller_id"] == site.controllers[1])
        .cloned()
        .unwrap_or_default();
    assert_ne!(
        second["state"], "confirmed",
        "never confirmed while the badge is there: {report}"
    );
    assert_eq!(uids(&site.devices[1]), ["04a22b91"]);

    site.devices[1].faults().set_drop_commands(0.0);
    wait_confirmed(&site, claire, "the removal once commands get through").await;
    assert!(uids(&site.devices[1]).is_empty());
    stop(site).await;
}

async fn reboot_leads_to_a_check(kind: BrokerKind) {
    let site = site(kind, UidFormat::Padded).await;
    let claire = add_badge(&site, CLAIRE, site.both).await;
    wait_confirmed(&site, claire, "Claire's badge programmed").await;
    // A factory reset empties the flash and restarts: the boot message alone must
    // bring gardien back (routine visits are an hour apart in this test).
    site.devices[0].factory_reset();
    eventually(
        20,
        "the badge restored after the boot",
        || uids(&site.devices[0]),
        |uids| uids == &["04a22b91"],
    )
    .await;
    let alerts_path = site.f.path("/alerts");
    let alerts = eventually_async(
        10,
        "a memory-loss alert",
        || site.admin.get(&alerts_path),
        |response| response.body.to_string().contains("controller_memory_lost"),
    )
    .await;
    assert!(
        alerts.body.to_string().contains("Porte 1"),
        "{}",
        alerts.body
    );
    stop(site).await;
}

async fn access_events_and_lost_key_alert(kind: BrokerKind) {
    // The reader reports uids without their leading zeros: 4a22b91.
    let site = site(kind, UidFormat::NoLeadingZeros).await;
    let claire = add_badge(&site, CLAIRE, site.both).await;
    wait_confirmed(&site, claire, "Claire's badge programmed").await;
    let granted = site.devices[0]
        .present(&[0x04, 0xA2, 0x2B, 0x91])
        .expect("present");
    assert!(granted.access.opens(), "{granted:?}");
    let events_path = site.f.path("/access-events");
    let events = eventually_async(
        10,
        "the access event in the history",
        || site.admin.get(&events_path),
        |response| response.body.to_string().contains("granted"),
    )
    .await;
    assert!(
        events
            .body
            .to_string()
            .contains(claire.to_string().as_str()),
        "{}",
        events.body
    );

    site.devices[1].faults().set_drop_commands(1.0);
    site.admin
        .post(
            &site.f.path(&format!("/keys/{claire}/declare-lost")),
            json!({ "reason": "perdu" }),
        )
        .await;
    // Controller 2 still holds the lost badge (its commands are lost): presented
    // there, it opens, and the council is alerted.
    let opened = site.devices[1]
        .present(&[0x04, 0xA2, 0x2B, 0x91])
        .expect("present");
    assert!(opened.access.opens(), "{opened:?}");
    let alerts_path = site.f.path("/alerts");
    let alerts = eventually_async(
        10,
        "the lost-key alert",
        || site.admin.get(&alerts_path),
        |response| response.body.to_string().contains("inactive_key_presented"),
    )
    .await;
    let text = alerts.body.to_string();
    assert!(
        text.contains("04A22B91") && text.contains("Porte 2") && text.contains("accès accordé"),
        "{text}"
    );
    stop(site).await;
}

async fn heartbeats_keep_a_controller_seen(kind: BrokerKind) {
    let broker = BrokerProcess::start(kind);
    let server = TestServer::start().await;
    let admin = server.admin().await;
    let f = common::fixture(&admin, "Les Tilleuls").await;
    admin
        .put(
            &f.path(&format!("/controllers/{}", f.controller)),
            json!({ "name": "Porte 1", "model": "esp-rfid", "transport": "mqtt",
                    "address": format!("{TOPIC}@{}", IPS[0]) }),
        )
        .await;
    // No engine: only the connection, which listens to the controllers it knows.
    let mqtt = Mqtt::start(server.store.clone(), &broker.service_config(), "test")
        .await
        .expect("MQTT connection");
    let _device = EspRfidDevice::start(
        EspRfidConfig {
            heartbeat_seconds: 1,
            ..device_config(IPS[0], 1, UidFormat::Padded)
        },
        broker.device_broker(),
        EspRfidFaults::seeded(1),
    )
    .expect("device");
    let status_path = f.path(&format!("/controllers/{}/status", f.controller));
    eventually_async(
        15,
        "last seen from heartbeats, without any visit",
        || admin.get(&status_path),
        |response| response.body["last_seen_at"].is_string(),
    )
    .await;
    mqtt.stop().await;
    server.stop().await;
}

async fn broker_restart_mid_sync(kind: BrokerKind) {
    let mut site = site(kind, UidFormat::Padded).await;
    let mut keys = Vec::new();
    for i in 0..12u32 {
        let identifier = format!("04{:06X}", 0x100000 + i);
        keys.push((
            identifier.clone(),
            add_badge(&site, &identifier, site.both).await,
        ));
    }
    // Mid-sync: some keys on the controllers, some not.
    eventually(
        20,
        "programming under way",
        || uids(&site.devices[0]).len(),
        |len| *len >= 1,
    )
    .await;
    site.broker.restart();
    for (_, key) in &keys {
        wait_confirmed(&site, *key, "every key confirmed after the restart").await;
    }
    let mut expected: Vec<String> = keys.iter().map(|(id, _)| id.to_lowercase()).collect();
    expected.sort();
    for device in &site.devices {
        assert_eq!(uids(device), expected, "nothing lost, nothing extra");
    }
    stop(site).await;
}

async fn ghost_keys_are_reported_like_on_modbus(kind: BrokerKind) {
    let site = site(kind, UidFormat::Padded).await;
    let claire = add_badge(&site, CLAIRE, site.both).await;
    wait_confirmed(&site, claire, "Claire's badge programmed").await;
    // Someone adds a badge on the controller's own web page: gardien does not know it.
    site.devices[0]
        .insert_user(&gardien_simulators::esprfid::EspRfidUser {
            uid: "0badc0de".into(),
            user: "ajouté à la main".into(),
            acctype: [1, 0, 0, 0],
            validsince: 0,
            validuntil: 4_102_444_800,
        })
        .expect("user");
    let audit = site
        .admin
        .post(
            &site
                .f
                .path(&format!("/controllers/{}/audit", site.controllers[0])),
            json!({}),
        )
        .await;
    assert_eq!(audit.status, 202, "{}", audit.body);
    let path = site
        .f
        .path(&format!("/controllers/{}/drift", site.controllers[0]));
    let drift = eventually_async(
        20,
        "the ghost reported",
        || site.admin.get(&path),
        |response| response.body.to_string().contains("uid:0BADC0DE"),
    )
    .await;
    let text = drift.body.to_string();
    assert!(text.contains("ghost") || text.contains("unknown"), "{text}");
    // Policy `audit` (the default): reported, left in place.
    assert_eq!(uids(&site.devices[0]), ["04a22b91", "0badc0de"]);
    stop(site).await;
}

/// A client publishing as a device would (the device account on Mosquitto).
async fn raw_publisher(broker: &BrokerProcess) -> rumqttc::AsyncClient {
    let device = broker.device_broker();
    let mut options = rumqttc::MqttOptions::new("bad-device", device.host.clone(), device.port);
    // rumqttc refuses to send more than 10 KiB by default; a huge message is the point.
    options.set_max_packet_size(1 << 20, 1 << 20);
    if let Some((user, password)) = &device.credentials {
        options.set_credentials(user, password);
    }
    let (client, mut event_loop) = rumqttc::AsyncClient::new(options, 16);
    tokio::spawn(async move { while event_loop.poll().await.is_ok() {} });
    client
}

async fn bad_messages_are_counted_and_change_nothing(kind: BrokerKind) {
    let site = site(kind, UidFormat::Padded).await;
    let claire = add_badge(&site, CLAIRE, site.both).await;
    wait_confirmed(&site, claire, "Claire's badge programmed").await;
    let publisher = raw_publisher(&site.broker).await;
    let send = format!("{TOPIC}/send");
    let huge = format!(
        "{{\"type\":\"heartbeat\",\"pad\":\"{}\"}}",
        "x".repeat(40_000)
    );
    for payload in [
        "{not json".to_string(),
        "[1,2,3]".to_string(),
        r#"{"type":"heartbeat","hostname":"esp-porte-1"}"#.to_string(),
        r#"{"type":"access","uid":"zz-not-hex","hostname":"esp-porte-1","access":"Always","isKnown":"true"}"#.to_string(),
        huge,
    ] {
        publisher
            .publish(send.as_str(), rumqttc::QoS::AtLeastOnce, false, payload)
            .await
            .expect("publish");
    }
    let path = site.f.path("/wmbus/rejections");
    let rejections = eventually_async(
        15,
        "five refusals counted",
        || site.admin.get(&path),
        |response| {
            let text = response.body.to_string();
            [
                "malformed_json",
                "not_an_object",
                "missing_field",
                "bad_uid",
                "too_large",
            ]
            .iter()
            .all(|reason| text.contains(reason))
        },
    )
    .await;
    assert!(
        rejections.body.to_string().contains(&send),
        "{}",
        rejections.body
    );
    // Nothing stored from them: no access event, and the service still programs.
    let events = site.admin.get(&site.f.path("/access-events")).await;
    assert_eq!(
        events.body.as_array().map(Vec::len),
        Some(0),
        "{}",
        events.body
    );
    let marc = add_badge(&site, MARC, site.f.profiles[0]).await;
    wait_confirmed(&site, marc, "a badge programmed after the bad messages").await;
    stop(site).await;
}

macro_rules! on_both_brokers {
    ($($scenario:ident),+ $(,)?) => {
        mod embedded {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $scenario() {
                    super::$scenario(super::BrokerKind::Embedded).await
                }
            )+
        }
        #[cfg(feature = "external")]
        mod mosquitto {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $scenario() {
                    super::$scenario(super::BrokerKind::Mosquitto).await
                }
            )+
        }
    };
}

on_both_brokers!(
    lost_badge_leaves_every_controller,
    dropped_commands_then_convergence,
    reboot_leads_to_a_check,
    access_events_and_lost_key_alert,
    heartbeats_keep_a_controller_seen,
    broker_restart_mid_sync,
    bad_messages_are_counted_and_change_nothing,
    ghost_keys_are_reported_like_on_modbus,
);
