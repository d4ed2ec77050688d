//! The embedded broker carries messages between two real rumqttc clients, at the QoS
//! levels the device protocols use, and refuses a client without the credentials.

use std::time::Duration;

use gardien_simulators::broker::{BrokerOptions, EmbeddedBroker};
use rumqttc::{AsyncClient, ConnectReturnCode, Event, MqttOptions, Packet, QoS};

fn options(broker: &EmbeddedBroker, id: &str) -> MqttOptions {
    let mut options = MqttOptions::new(id, "127.0.0.1", broker.addr().port());
    options.set_keep_alive(Duration::from_secs(5));
    options
}

#[tokio::test]
async fn messages_cross_the_embedded_broker_at_qos_1_and_2() {
    let broker = EmbeddedBroker::start(&BrokerOptions::default()).expect("broker");
    let (subscriber, mut sub_loop) = AsyncClient::new(options(&broker, "sub"), 16);
    subscriber
        .subscribe("site/cmd", QoS::ExactlyOnce)
        .await
        .expect("subscribe");
    subscriber
        .subscribe("site/send", QoS::AtLeastOnce)
        .await
        .expect("subscribe");
    let (publisher, mut pub_loop) = AsyncClient::new(options(&broker, "pub"), 16);
    tokio::spawn(async move { while pub_loop.poll().await.is_ok() {} });

    let mut suback = 0;
    let mut received = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while received.len() < 2 {
        let event = tokio::time::timeout_at(deadline, sub_loop.poll())
            .await
            .expect("messages within 10 s")
            .expect("connection");
        match event {
            Event::Incoming(Packet::SubAck(_)) => {
                suback += 1;
                if suback == 2 {
                    publisher
                        .publish("site/cmd", QoS::ExactlyOnce, false, "a")
                        .await
                        .expect("publish");
                    publisher
                        .publish("site/send", QoS::AtLeastOnce, false, "b")
                        .await
                        .expect("publish");
                }
            }
            Event::Incoming(Packet::Publish(publish)) => {
                received.push((publish.topic, publish.payload.to_vec()))
            }
            _ => {}
        }
    }
    received.sort();
    assert_eq!(
        received,
        vec![
            ("site/cmd".to_string(), b"a".to_vec()),
            ("site/send".to_string(), b"b".to_vec())
        ]
    );
}

#[tokio::test]
async fn a_broker_with_credentials_refuses_a_wrong_password() {
    let broker = EmbeddedBroker::start(&BrokerOptions {
        credentials: Some(("gardien".into(), "secret".into())),
        ..BrokerOptions::default()
    })
    .expect("broker");
    let mut wrong = options(&broker, "intruder");
    wrong.set_credentials("gardien", "guess");
    let (_client, mut event_loop) = AsyncClient::new(wrong, 4);
    let refused = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match event_loop.poll().await {
                Ok(Event::Incoming(Packet::ConnAck(ack))) => {
                    return ack.code != ConnectReturnCode::Success
                }
                Ok(_) => {}
                Err(_) => return true,
            }
        }
    })
    .await
    .expect("an answer within 10 s");
    assert!(refused, "a wrong password must be refused");

    let mut right = options(&broker, "gardien-1");
    right.set_credentials("gardien", "secret");
    let (_client, mut event_loop) = AsyncClient::new(right, 4);
    let accepted = tokio::time::timeout(Duration::from_secs(10), event_loop.poll())
        .await
        .expect("an answer within 10 s");
    assert!(
        matches!(accepted, Ok(Event::Incoming(Packet::ConnAck(ref ack))) if ack.code == ConnectReturnCode::Success),
        "{accepted:?}"
    );
}
