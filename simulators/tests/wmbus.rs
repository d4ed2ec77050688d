//! The simulated wmbusmeters publisher through the embedded broker, seen by a plain
//! rumqttc subscriber: telegrams in the drivers' shapes whose indexes are the
//! consumption model's, scenarios in the status words, silent meters, and the faults
//! (duplicates, late telegrams, broken messages).

use std::collections::HashMap;
use std::time::Duration;

use gardien_simulators::broker::{BrokerOptions, EmbeddedBroker};
use gardien_simulators::mbg::calendar::iso;
use gardien_simulators::mbg::{population, status};
use gardien_simulators::wmbus::telegram::HUGE_PADDING;
use gardien_simulators::wmbus::{
    Driver, Malformed, Round, WmbusConfig, WmbusFaults, WmbusPublisher,
};
use gardien_simulators::{BusMeter, Scenario, ScenarioKind, SimClock};
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use serde_json::Value;
use tokio::sync::{mpsc, oneshot};

/// 2026-01-01T00:00:00 in Paris: where the meters' initial indexes hold.
const INSTALLED: i64 = 1_767_222_000;
/// 2026-01-10T02:00:00Z.
const T0: i64 = 1_768_010_400;
const DAY: i64 = 86_400;

fn mqtt(broker: &EmbeddedBroker, id: &str) -> MqttOptions {
    let mut options = MqttOptions::new(id, "127.0.0.1", broker.addr().port());
    options.set_keep_alive(Duration::from_secs(5));
    options.set_max_packet_size(1024 * 1024, 1024 * 1024);
    options
}

/// Messages received by a subscriber to `wmbusmeters/#`, in arrival order.
struct Listener {
    messages: mpsc::UnboundedReceiver<(String, Vec<u8>)>,
}

impl Listener {
    /// Subscribes and returns once the broker has acknowledged the subscription.
    async fn start(broker: &EmbeddedBroker) -> Listener {
        let (client, mut event_loop) = AsyncClient::new(mqtt(broker, "listener"), 64);
        client
            .subscribe("wmbusmeters/#", QoS::AtLeastOnce)
            .await
            .expect("subscribe");
        let (tx, messages) = mpsc::unbounded_channel();
        let (subscribed, ready) = oneshot::channel();
        tokio::spawn(async move {
            let _client = client;
            let mut subscribed = Some(subscribed);
            loop {
                match event_loop.poll().await {
                    Ok(Event::Incoming(Packet::SubAck(_))) => {
                        if let Some(ready) = subscribed.take() {
                            let _ = ready.send(());
                        }
                    }
                    Ok(Event::Incoming(Packet::Publish(publish))) => {
                        if tx.send((publish.topic, publish.payload.to_vec())).is_err() {
                            return;
                        }
                    }
                    Ok(_) => {}
                    Err(error) => panic!("listener connection: {error}"),
                }
            }
        });
        tokio::time::timeout(Duration::from_secs(10), ready)
            .await
            .expect("subscribed within 10 s")
            .expect("the listener runs");
        Listener { messages }
    }

    /// The next `count` messages, within 10 s.
    async fn take(&mut self, count: usize) -> Vec<(String, Vec<u8>)> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        let mut got = Vec::with_capacity(count);
        while got.len() < count {
            match tokio::time::timeout_at(deadline, self.messages.recv()).await {
                Ok(Some(message)) => got.push(message),
                _ => panic!("{} of {count} messages within 10 s", got.len()),
            }
        }
        got
    }
}

/// A publisher of `flats` flats of a generated building, on a frozen clock at `T0`.
fn on_air(
    broker: &EmbeddedBroker,
    flats: u32,
    faults: WmbusFaults,
) -> (WmbusPublisher, Vec<BusMeter>) {
    let meters = population(11, 20_000_001, flats, INSTALLED);
    let config = WmbusConfig {
        faults,
        seed: 5,
        ..WmbusConfig::default()
    };
    let publisher = WmbusPublisher::new(
        config,
        meters.clone(),
        SimClock::frozen(T0),
        mqtt(broker, "wmbusmeters"),
    )
    .expect("a publisher");
    (publisher, meters)
}

fn json(payload: &[u8]) -> Value {
    serde_json::from_slice(payload)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(payload)))
}

fn id_of(telegram: &Value) -> u32 {
    telegram["id"]
        .as_str()
        .and_then(|id| id.parse().ok())
        .unwrap_or_else(|| panic!("an id in {telegram}"))
}

/// Telegrams of a round without faults, by meter id.
async fn round(
    publisher: &WmbusPublisher,
    listener: &mut Listener,
) -> (Round, HashMap<u32, (String, Value)>) {
    let round = publisher.publish_round().await.expect("published");
    publisher
        .flush(Duration::from_secs(10))
        .await
        .expect("acknowledged");
    let mut by_id = HashMap::new();
    for (topic, payload) in listener.take(round.sent).await {
        let telegram = json(&payload);
        by_id.insert(id_of(&telegram), (topic, telegram));
    }
    (round, by_id)
}

fn index(publisher: &WmbusPublisher, telegram: &Value) -> f64 {
    let id = id_of(telegram);
    let driver = publisher.driver(id).expect("a driver");
    telegram[driver.index_field()]
        .as_f64()
        .unwrap_or_else(|| panic!("{} in {telegram}", driver.index_field()))
}

fn scenario(kind: ScenarioKind, meter_id: u32, start: i64, end: Option<i64>) -> Scenario {
    Scenario {
        kind,
        meter_id,
        start,
        end,
    }
}

#[tokio::test]
async fn telegrams_carry_the_consumption_model_in_the_drivers_shapes() {
    let broker = EmbeddedBroker::start(&BrokerOptions::default()).expect("broker");
    let mut listener = Listener::start(&broker).await;
    let (publisher, meters) = on_air(&broker, 6, WmbusFaults::default());

    let (first, telegrams) = round(&publisher, &mut listener).await;
    assert_eq!(first.sent, meters.len());
    assert_eq!(first.telegrams, meters.len());
    assert_eq!(telegrams.len(), meters.len());
    let mut drivers = std::collections::HashSet::new();
    for meter in &meters {
        let (topic, telegram) = &telegrams[&meter.id];
        let driver = publisher.driver(meter.id).expect("a driver");
        drivers.insert(driver);
        assert_eq!(Some(topic), publisher.topic(meter.id).as_ref());
        assert!(topic.starts_with("wmbusmeters/"), "{topic}");
        assert_eq!(telegram["_"], "telegram");
        assert_eq!(telegram["meter"], driver.name());
        assert_eq!(telegram["timestamp"], iso(T0));
        assert!(telegram["name"].is_string() && telegram["media"].is_string());
        let model = publisher
            .meter_value_at(meter.id, T0)
            .expect("a value")
            .value();
        let sent = index(&publisher, telegram);
        assert!(
            (sent - model).abs() < 1e-9,
            "{}: {sent} vs {model}",
            meter.id
        );
        match driver.status_field() {
            Some(field) => assert!(
                matches!(telegram[field].as_str(), Some("OK" | "no_alarm")),
                "{telegram}"
            ),
            None => assert!(telegram.get("current_status").is_none()),
        }
        if driver == Driver::Fhkvdataiii {
            assert_eq!(telegram["previous_date"], "2025-12-31T02:00:00Z");
            assert!(telegram["previous_hca"].is_number());
        }
    }
    assert!(drivers.len() >= 4, "{drivers:?}");

    // A day later every index moved on, or stood still in an empty flat.
    publisher.clock().advance(DAY);
    let (_, later) = round(&publisher, &mut listener).await;
    let mut moved = 0;
    for meter in &meters {
        let before = index(&publisher, &telegrams[&meter.id].1);
        let after = index(&publisher, &later[&meter.id].1);
        assert!(after >= before, "{}: {before} then {after}", meter.id);
        let model = publisher
            .meter_value_at(meter.id, T0 + DAY)
            .expect("a value")
            .value();
        assert!((after - model).abs() < 1e-9);
        moved += usize::from(after > before);
    }
    assert!(
        moved > meters.len() / 2,
        "{moved} of {} moved",
        meters.len()
    );
}

#[tokio::test]
async fn scenarios_show_in_the_status_words_and_silence_meters() {
    let broker = EmbeddedBroker::start(&BrokerOptions::default()).expect("broker");
    let mut listener = Listener::start(&broker).await;
    let (publisher, meters) = on_air(&broker, 4, WmbusFaults::default());
    // Flat 1: cold water read as a Multical 21, hot water as an IZAR; flats' third
    // meters: heat or allocator.
    let (cold, hot) = (meters[3].id, meters[4].id);
    publisher.set_driver(cold, Driver::Kamwater);
    publisher.set_driver(hot, Driver::Izar);
    let heat = meters
        .iter()
        .find(|m| publisher.driver(m.id) == Some(Driver::Kamheat))
        .expect("a heat meter")
        .id;
    let silent = meters[6].id;
    publisher
        .apply(&scenario(
            ScenarioKind::Leak {
                litres_per_hour: 30.0,
            },
            cold,
            T0 - 3600,
            None,
        ))
        .expect("a leak");
    publisher
        .apply(&scenario(
            ScenarioKind::Backwards { drop: 1.0 },
            hot,
            T0 + DAY / 2,
            None,
        ))
        .expect("a drop");
    publisher
        .apply(&scenario(
            ScenarioKind::NoAnswer,
            silent,
            T0 + DAY / 2,
            None,
        ))
        .expect("silence");
    publisher
        .force_status(heat, status::BATTERY_LOW)
        .expect("a heat meter");

    let (_, first) = round(&publisher, &mut listener).await;
    assert_eq!(first[&cold].1["current_status"], "LEAK");
    assert_eq!(first[&cold].1["status"], "LEAK");
    assert_eq!(first[&hot].1["current_alarms"], "no_alarm");
    assert_eq!(first[&heat].1["status"], "LOW_BATTERY_LEVEL");
    assert!(first.contains_key(&silent));

    publisher.clock().advance(DAY);
    let (second_round, second) = round(&publisher, &mut listener).await;
    assert_eq!(second_round.silent, 1);
    assert!(
        !second.contains_key(&silent),
        "a silent meter sends nothing"
    );
    assert_eq!(second[&hot].1["current_alarms"], "back_flow");
    let (before, after) = (
        index(&publisher, &first[&hot].1),
        index(&publisher, &second[&hot].1),
    );
    assert!(after < before, "the index fell: {before} then {after}");
    assert_eq!(second[&cold].1["current_status"], "LEAK");
    // Reverse flow is said once, by the telegram after the drop.
    publisher.clock().advance(DAY);
    let (_, third) = round(&publisher, &mut listener).await;
    assert_eq!(third[&hot].1["current_alarms"], "no_alarm");

    let truth = publisher.ground_truth();
    let kinds: Vec<&str> = truth.scenarios.iter().map(|r| r.kind.as_str()).collect();
    assert_eq!(kinds, vec!["leak", "backwards", "no_answer"]);
}

#[tokio::test]
async fn duplicates_are_the_same_telegram_twice() {
    let broker = EmbeddedBroker::start(&BrokerOptions::default()).expect("broker");
    let mut listener = Listener::start(&broker).await;
    let faults = WmbusFaults {
        duplicate: 1.0,
        ..WmbusFaults::default()
    };
    let (publisher, meters) = on_air(&broker, 3, faults);
    let round = publisher.publish_round().await.expect("published");
    assert_eq!(round.duplicates, meters.len());
    assert_eq!(round.sent, 2 * meters.len());
    let mut copies: HashMap<Vec<u8>, usize> = HashMap::new();
    for (_, payload) in listener.take(round.sent).await {
        *copies.entry(payload).or_default() += 1;
    }
    assert_eq!(copies.len(), meters.len());
    assert!(copies.values().all(|&n| n == 2), "{:?}", copies.values());
}

#[tokio::test]
async fn late_telegrams_come_after_the_next_one() {
    let broker = EmbeddedBroker::start(&BrokerOptions::default()).expect("broker");
    let mut listener = Listener::start(&broker).await;
    let faults = WmbusFaults {
        out_of_order: 1.0,
        ..WmbusFaults::default()
    };
    let (publisher, meters) = on_air(&broker, 3, faults);
    let held = publisher.publish_round().await.expect("published");
    assert_eq!((held.sent, held.held), (0, meters.len()));
    publisher.clock().advance(3600);
    let round = publisher.publish_round().await.expect("published");
    assert_eq!(round.released, meters.len());
    assert_eq!(round.sent, 2 * meters.len());
    let mut stamps: HashMap<String, Vec<String>> = HashMap::new();
    for (topic, payload) in listener.take(round.sent).await {
        let telegram = json(&payload);
        stamps
            .entry(topic)
            .or_default()
            .push(telegram["timestamp"].as_str().unwrap_or("").to_owned());
    }
    assert_eq!(stamps.len(), meters.len());
    for (topic, order) in &stamps {
        assert_eq!(order, &vec![iso(T0 + 3600), iso(T0)], "{topic}");
    }
}

#[tokio::test]
async fn broken_messages_of_every_kind_follow_good_telegrams() {
    let broker = EmbeddedBroker::start(&BrokerOptions::default()).expect("broker");
    let mut listener = Listener::start(&broker).await;
    let faults = WmbusFaults {
        malformed: 1.0,
        ..WmbusFaults::default()
    };
    let (publisher, meters) = on_air(&broker, 10, faults);
    let round = publisher.publish_round().await.expect("published");
    publisher
        .flush(Duration::from_secs(10))
        .await
        .expect("acknowledged");
    assert_eq!(round.malformed, meters.len());
    assert_eq!(round.sent, 2 * meters.len());
    let mut good = 0;
    let mut broken: HashMap<String, usize> = HashMap::new();
    for (_, payload) in listener.take(round.sent).await {
        let kind = match serde_json::from_slice::<Value>(&payload) {
            Err(_) => Malformed::BadJson,
            Ok(_) if payload.len() > HUGE_PADDING => Malformed::Huge,
            Ok(t) if t.get("id").is_none() => Malformed::MissingId,
            Ok(t)
                if t.as_object()
                    .is_some_and(|o| o.values().any(|v| v == "nan")) =>
            {
                Malformed::NanIndex
            }
            Ok(_) => {
                good += 1;
                continue;
            }
        };
        *broken.entry(format!("{kind:?}")).or_default() += 1;
    }
    assert_eq!(good, meters.len());
    assert_eq!(broken.values().sum::<usize>(), meters.len());
    assert_eq!(broken.len(), Malformed::ALL.len(), "{broken:?}");
}
