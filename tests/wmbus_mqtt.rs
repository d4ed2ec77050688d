//! wmbusmeters telegrams through a real broker into readings and alarms: the simulated
//! publisher (the MBG-250's consumption model, QoS 1, duplicates, out-of-order and
//! malformed messages), gardien's MQTT connection and inbox, a SQLite file. Through
//! the embedded broker, and through Mosquitto with the `external` feature.

mod common;

use std::time::Duration;

use common::mqtt::{BrokerKind, BrokerProcess, DEVICE_USER};
use common::{eventually_async, Client, Fixture, TestServer};
use gardien::demo::meters::{kind_of, unit_of};
use gardien::mqtt::config::WmbusSubscription;
use gardien::mqtt::Mqtt;
use gardien_simulators::mbg::{population, status};
use gardien_simulators::wmbus::{WmbusConfig, WmbusFaults, WmbusPublisher};
use gardien_simulators::{BusMeter, SimClock};
use serde_json::{json, Value};

/// 2026-03-01T00:00Z: meters installed on 2026-01-01 have two months behind them.
const START: i64 = 1_772_323_200;
const DAY: i64 = 86_400;

struct Site {
    broker: BrokerProcess,
    server: TestServer,
    mqtt: Mqtt,
    admin: Client,
    f: Fixture,
    meters: Vec<BusMeter>,
    publisher: WmbusPublisher,
}

/// Two flats' meters (cold, hot, heat) in the database, and on the air; plus one
/// meter on the air that the database does not know.
async fn site(kind: BrokerKind, faults: WmbusFaults) -> Site {
    let broker = BrokerProcess::start(kind);
    let server = TestServer::start().await;
    let admin = server.admin().await;
    let f = common::fixture(&admin, "Les Tilleuls").await;
    let meters = population(7, 55_000_001, 3, 1_767_225_600);
    for (index, meter) in meters.iter().take(6).enumerate() {
        admin
            .create(
                &f.path("/meters"),
                json!({
                    "kind": kind_of(meter), "unit_id": f.units[index / 3],
                    "mbus_id": format!("{:08}", meter.id), "manufacturer": meter.manufacturer,
                    "version": meter.version, "medium": meter.medium,
                    "measure_unit": unit_of(meter), "digits": meter.digits,
                    "installed_on": "2026-01-01", "initial_index": meter.initial,
                }),
            )
            .await;
    }
    let config = gardien::mqtt::MqttConfig {
        wmbus: vec![WmbusSubscription {
            topic: "wmbusmeters/#".into(),
            residence_id: f.rid,
        }],
        ..broker.service_config()
    };
    let mqtt = Mqtt::start(server.store.clone(), &config, "test")
        .await
        .expect("MQTT connection");
    let device = broker.device_broker();
    let mut options =
        rumqttc::MqttOptions::new("wmbusmeters-test", device.host.clone(), device.port);
    options.set_keep_alive(Duration::from_secs(5));
    options.set_clean_session(false);
    if kind == BrokerKind::Mosquitto {
        options.set_credentials(DEVICE_USER.0, DEVICE_USER.1);
    }
    let publisher = WmbusPublisher::new(
        WmbusConfig {
            faults,
            seed: 11,
            ..WmbusConfig::default()
        },
        meters.clone(),
        SimClock::frozen(START),
        options,
    )
    .expect("publisher");
    Site {
        broker,
        server,
        mqtt,
        admin,
        f,
        meters,
        publisher,
    }
}

/// Waits until gardien subscribed: a probe telegram for the unknown meter is counted.
async fn wait_subscribed(site: &Site) {
    let path = site.f.path("/wmbus/unknown-meters");
    eventually_async(
        15,
        "gardien hears the publisher",
        || async {
            let _ = site.publisher.publish_round().await;
            site.admin.get(&path).await
        },
        |response| {
            response
                .body
                .to_string()
                .contains(&format!("{:08}", site.meters[6].id))
        },
    )
    .await;
}

async fn readings_of(site: &Site, index: usize) -> Vec<Value> {
    let meter_id = meter_id(site, index).await;
    let response = site
        .admin
        .get(
            &site
                .f
                .path(&format!("/meters/{meter_id}/readings?limit=500")),
        )
        .await;
    match &response.body {
        Value::Array(items) => items.clone(),
        body => body["items"].as_array().cloned().unwrap_or_default(),
    }
}

async fn meter_id(site: &Site, index: usize) -> i64 {
    let listed = site
        .admin
        .get(
            &site
                .f
                .path(&format!("/meters?q={:08}", site.meters[index].id)),
        )
        .await;
    listed.body["items"][0]["id"]
        .as_i64()
        .expect("the meter is listed")
}

/// Readings of the six known meters dated after the probes' day (2026-03-01).
async fn readings_after_start(site: &Site) -> usize {
    let mut total = 0;
    for index in 0..6 {
        total += readings_of(site, index)
            .await
            .iter()
            .filter(|r| r["read_at"].as_str().is_some_and(|at| at > "2026-03-02"))
            .count();
    }
    total
}

async fn stop(site: Site) {
    site.mqtt.stop().await;
    site.server.stop().await;
}

async fn telegrams_become_readings_and_alarms(kind: BrokerKind) {
    let site = site(
        kind,
        WmbusFaults {
            duplicate: 0.3,
            out_of_order: 0.3,
            malformed: 0.3,
            malformed_kinds: Vec::new(),
        },
    )
    .await;
    wait_subscribed(&site).await;
    // Meter 0 (a cold water meter) leaks from the second day.
    for day in 1..=4 {
        site.publisher.clock().set_time(START + day * DAY);
        if day == 2 {
            site.publisher
                .force_status(site.meters[0].id, status::LEAK)
                .expect("leak");
        }
        site.publisher.publish_round().await.expect("round");
    }
    // Day 5, then day 5 again: a telegram held back goes out after the meter's next
    // one, so the repeat releases day 5's (its own copies are duplicates).
    site.publisher.clock().set_time(START + 5 * DAY);
    site.publisher.publish_round().await.expect("round");
    site.publisher.publish_round().await.expect("round");
    site.publisher
        .flush(Duration::from_secs(10))
        .await
        .expect("the broker took every telegram");
    // One reading per meter and instant, whatever was duplicated or delayed (the
    // probes of day 0 are not counted: one of them may arrive late).
    let expected = 6 * 5;
    let seen = common::eventually_async(
        15,
        "every telegram stored",
        || readings_after_start(&site),
        |seen| *seen >= expected,
    )
    .await;
    assert_eq!(seen, expected, "every telegram stored once");
    // The values are the model's, in the meter's unit.
    let readings = readings_of(&site, 1).await;
    let last = readings
        .iter()
        .find(|r| {
            r["read_at"]
                .as_str()
                .is_some_and(|at| at.starts_with("2026-03-06"))
        })
        .cloned()
        .unwrap_or_default();
    let model = site
        .publisher
        .meter_value_at(site.meters[1].id, START + 5 * DAY)
        .expect("model value")
        .value();
    let stored = last["value"].as_f64().unwrap_or(f64::NAN);
    assert!(
        (stored - model).abs() < 1e-6 * model.max(1.0),
        "{stored} vs {model}"
    );
    let alarms_path = site.f.path("/meter-alarms");
    let alarms = eventually_async(
        10,
        "the leak alarm",
        || site.admin.get(&alarms_path),
        |response| response.body.to_string().contains("leak"),
    )
    .await;
    let leak_meter = meter_id(&site, 0).await;
    assert!(
        alarms
            .body
            .to_string()
            .contains(&format!("\"meter_id\":{leak_meter}")),
        "{}",
        alarms.body
    );
    // The malformed ones were counted, none stored.
    let rejections = site.admin.get(&site.f.path("/wmbus/rejections")).await;
    assert!(
        rejections.body["total"].as_i64().unwrap_or(0) > 0,
        "{}",
        rejections.body
    );
    stop(site).await;
}

/// Readings of meter `index` on `day` (YYYY-MM-DD).
async fn readings_on(site: &Site, index: usize, day: &str) -> usize {
    readings_of(site, index)
        .await
        .iter()
        .filter(|r| r["read_at"].as_str().is_some_and(|at| at.starts_with(day)))
        .count()
}

async fn broker_restart_loses_nothing(kind: BrokerKind) {
    let mut site = site(kind, WmbusFaults::default()).await;
    wait_subscribed(&site).await;
    site.publisher.clock().set_time(START + DAY);
    site.publisher.publish_round().await.expect("round");
    eventually_async(
        15,
        "day 1 stored",
        || readings_on(&site, 2, "2026-03-02"),
        |count| *count == 1,
    )
    .await;
    // The broker restarts with nothing in memory; both sides reconnect, gardien
    // subscribes again. A wmbusmeters set-up publishes every interval: each round of
    // the same instant is the same telegram again, stored once when it gets through.
    site.broker.restart();
    site.publisher.clock().set_time(START + 2 * DAY);
    eventually_async(
        30,
        "day 2 stored after the restart",
        || async {
            let _ = site.publisher.publish_round().await;
            readings_on(&site, 2, "2026-03-03").await
        },
        |count| *count >= 1,
    )
    .await;
    site.publisher
        .flush(Duration::from_secs(20))
        .await
        .expect("every telegram acknowledged after the restart");
    for index in 0..6 {
        for day in ["2026-03-02", "2026-03-03"] {
            assert_eq!(
                readings_on(&site, index, day).await,
                1,
                "meter {index} on {day}: once"
            );
        }
    }
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
    telegrams_become_readings_and_alarms,
    broker_restart_loses_nothing
);
