//! The real deployment path: gardien reaches Mosquitto over TLS (the broker's
//! certificate checked against the configured CA, a client certificate, a password
//! and an ACL), while the devices use the site's plain listener. Needs Mosquitto
//! (`external` feature; `.ci/run` installs it).
#![cfg(feature = "external")]

mod common;

use std::time::Duration;

use common::mqtt::BrokerProcess;
use common::{eventually_async, TestServer};
use gardien::mqtt::Mqtt;
use gardien_simulators::esprfid::{EspRfidConfig, EspRfidDevice, EspRfidFaults};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_tls_with_a_client_certificate_a_badge_is_programmed_and_read_back() {
    let broker = BrokerProcess::start_with_tls();
    let server = TestServer::start().await;
    let admin = server.admin().await;
    let f = common::fixture(&admin, "Les Tilleuls").await;
    let moved = admin
        .put(
            &f.path(&format!("/controllers/{}", f.controller)),
            json!({ "name": "Porte 1", "model": "esp-rfid", "transport": "mqtt",
                    "address": "tls-site@10.0.0.11" }),
        )
        .await;
    assert_eq!(moved.status, 200, "{}", moved.body);
    let mqtt = Mqtt::start(server.store.clone(), &broker.service_tls_config(), "tls")
        .await
        .expect("MQTT over TLS");
    let link = mqtt.link();
    common::eventually(
        15,
        "connected over TLS",
        || {
            let error = link
                .last_error
                .lock()
                .map(|e| e.clone())
                .unwrap_or_default();
            (
                link.connected.load(std::sync::atomic::Ordering::SeqCst),
                error,
            )
        },
        |(connected, _)| *connected,
    )
    .await;
    let mut server = server;
    server.start_engine_with(common::test_sync_config(), Some(mqtt.channel().clone()));
    let device = EspRfidDevice::start(
        EspRfidConfig {
            topic: "tls-site".into(),
            ip: "10.0.0.11".into(),
            hostname: "esp-tls".into(),
            relays: 3,
            reconnect_delay: Duration::from_millis(200),
            ..EspRfidConfig::default()
        },
        broker.device_broker(),
        EspRfidFaults::seeded(3),
    )
    .expect("device");
    let key = admin
        .create(
            &f.path("/keys"),
            json!({ "kind": "vigik_badge", "identifier": "04A22B91", "profile_ids": [f.profiles[0]] }),
        )
        .await;
    let path = f.path(&format!("/keys/{key}/sync"));
    eventually_async(
        30,
        "the badge confirmed through the TLS connection",
        || admin.get(&path),
        |response| response.body["controllers"][0]["state"] == "confirmed",
    )
    .await;
    let users: Vec<String> = device.snapshot().users.into_iter().map(|u| u.uid).collect();
    assert_eq!(users, ["04a22b91"]);
    mqtt.stop().await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_certificate_authority_is_refused() {
    let broker = BrokerProcess::start_with_tls();
    let other = BrokerProcess::start_with_tls();
    let server = TestServer::start().await;
    // The CA of another broker: the server's certificate must not be trusted.
    let mut config = broker.service_tls_config();
    if let (Some(tls), Some(other)) = (config.tls.as_mut(), other.tls.as_ref()) {
        tls.ca_file = other.ca_file.clone();
    }
    let mqtt = Mqtt::start(server.store.clone(), &config, "tls-wrong-ca")
        .await
        .expect("the connection is attempted in the background");
    let link = mqtt.link();
    common::eventually(
        15,
        "connection attempts refused",
        || link.failures.load(std::sync::atomic::Ordering::SeqCst),
        |failures| *failures >= 2,
    )
    .await;
    assert_eq!(
        link.connections.load(std::sync::atomic::Ordering::SeqCst),
        0
    );
    let error = link
        .last_error
        .lock()
        .map(|e| e.clone())
        .unwrap_or_default();
    assert!(
        error.is_some_and(|e| e.to_lowercase().contains("cert") || e.contains("Tls")),
        "certificate error expected"
    );
    mqtt.stop().await;
    server.stop().await;
}
