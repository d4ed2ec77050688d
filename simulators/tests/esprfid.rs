//! The esp-rfid simulator over a real MQTT broker, driven by a raw rumqttc client that
//! plays the service: commands on `TOPIC/cmd`, answers read on `TOPIC/send`.
//!
//! "Nothing was sent" is shown without waiting: the test sends a second command that
//! does answer and checks that its answer is the next message (one device publishes
//! in order).

mod common;

use std::net::SocketAddr;
use std::process::Stdio;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use common::Deadline;
use gardien_simulators::broker::{free_port, BrokerOptions, EmbeddedBroker};
use gardien_simulators::esprfid::AccessType;
use gardien_simulators::{
    EspRfidConfig, EspRfidDevice, EspRfidFaults, EspRfidSnapshot, EspRfidUser, MqttBroker,
    UidFormat, UserlistShape,
};
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{Child, ChildStdout, Command};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio::time::timeout;

/// Longer than `common::PATIENCE`: reconnections take a few retries.
const PATIENCE: Duration = Duration::from_secs(10);
const TOPIC: &str = "residence";
/// 2100-01-01.
const FAR: i64 = 4_102_444_800;

/// The service's side: a client subscribed to `TOPIC/send`.
struct Service {
    client: AsyncClient,
    inbox: mpsc::UnboundedReceiver<Value>,
    /// One per PUBCOMP: the broker holds the command.
    delivered: mpsc::UnboundedReceiver<()>,
    poller: JoinHandle<()>,
}

impl Drop for Service {
    fn drop(&mut self) {
        self.poller.abort();
    }
}

impl Service {
    async fn connect(port: u16) -> Service {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let id = format!("service-{}", NEXT.fetch_add(1, Ordering::Relaxed));
        let mut options = MqttOptions::new(id, "127.0.0.1", port);
        options.set_keep_alive(Duration::from_secs(5));
        let (client, mut event_loop) = AsyncClient::new(options, 64);
        client
            .subscribe(format!("{TOPIC}/send"), QoS::AtLeastOnce)
            .await
            .expect("subscribe");
        let (messages, inbox) = mpsc::unbounded_channel();
        let (pubcomp, delivered) = mpsc::unbounded_channel();
        let (ready, subscribed) = oneshot::channel();
        let poller = tokio::spawn(async move {
            let mut ready = Some(ready);
            loop {
                match event_loop.poll().await {
                    Ok(Event::Incoming(Packet::SubAck(_))) => {
                        if let Some(ready) = ready.take() {
                            let _ = ready.send(());
                        }
                    }
                    Ok(Event::Incoming(Packet::PubComp(_))) => {
                        let _ = pubcomp.send(());
                    }
                    Ok(Event::Incoming(Packet::Publish(publish))) => {
                        let message: Value = serde_json::from_slice(&publish.payload)
                            .expect("the device sends JSON");
                        if messages.send(message).is_err() {
                            return;
                        }
                    }
                    Ok(_) => {}
                    // Back-off before rumqttc reconnects, not synchronisation.
                    Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
                }
            }
        });
        timeout(PATIENCE, subscribed)
            .await
            .expect("subscribed in time")
            .expect("poller alive");
        Service {
            client,
            inbox,
            delivered,
            poller,
        }
    }

    async fn send(&mut self, command: Value) {
        self.send_text(command.to_string()).await;
    }

    /// Returns once the broker has the command (QoS 2 handshake done), so what the
    /// test does next cannot overtake it.
    async fn send_text(&mut self, text: String) {
        self.client
            .publish(format!("{TOPIC}/cmd"), QoS::ExactlyOnce, false, text)
            .await
            .expect("publish");
        timeout(PATIENCE, self.delivered.recv())
            .await
            .expect("the broker acknowledges in time")
            .expect("poller alive");
    }

    async fn next(&mut self) -> Value {
        timeout(PATIENCE, self.inbox.recv())
            .await
            .expect("a message in time")
            .expect("poller alive")
    }

    /// The next message of this type, skipping others (heartbeats, boots of others).
    async fn next_of(&mut self, kind: &str) -> Value {
        self.next_where(|m| m["type"] == kind).await
    }

    async fn next_where(&mut self, wanted: impl Fn(&Value) -> bool) -> Value {
        loop {
            let message = self.next().await;
            if wanted(&message) {
                return message;
            }
        }
    }
}

fn config(ip: &str) -> EspRfidConfig {
    EspRfidConfig {
        topic: TOPIC.into(),
        ip: ip.into(),
        hostname: format!("esp-{ip}"),
        door_name: format!("door {ip}"),
        reconnect_delay: Duration::from_millis(100),
        ..EspRfidConfig::default()
    }
}

fn ack(kind: &str, ip: &str) -> Value {
    json!({ "type": kind, "ip": ip, "hostname": format!("esp-{ip}") })
}

fn command(cmd: &str, ip: &str) -> Value {
    json!({ "cmd": cmd, "doorip": ip })
}

fn adduser(ip: &str, uid: &str, acctype: i64, validuntil: i64) -> Value {
    json!({ "cmd": "adduser", "doorip": ip, "uid": uid, "user": format!("user {uid}"),
            "acctype": acctype, "validsince": 0, "validuntil": validuntil })
}

/// A broker, the service subscribed, and the devices started and booted.
async fn setup(configs: Vec<EspRfidConfig>) -> (Service, Vec<EspRfidDevice>) {
    let broker = EmbeddedBroker::start(&BrokerOptions::default()).expect("broker");
    let mut service = Service::connect(broker.addr().port()).await;
    let mut devices = Vec::new();
    for config in configs {
        let hostname = config.hostname.clone();
        let device = EspRfidDevice::start(config, broker.addr().into(), EspRfidFaults::seeded(1))
            .expect("device");
        let boot = service.next_of("boot").await;
        assert_eq!(boot["hostname"], hostname);
        devices.push(device);
    }
    (service, devices)
}

async fn wait_until(device: &EspRfidDevice, what: impl Fn(&EspRfidSnapshot) -> bool) {
    let deadline = Deadline::after(PATIENCE);
    while !what(&device.snapshot()) {
        deadline.tick().await;
    }
}

#[tokio::test]
async fn adduser_then_getuserlist_in_both_shapes() {
    let (mut service, devices) = setup(vec![
        EspRfidConfig {
            userlist_shape: UserlistShape::Userfile,
            relays: 2,
            ..config("192.168.1.31")
        },
        EspRfidConfig {
            userlist_shape: UserlistShape::Stored,
            ..config("192.168.1.32")
        },
    ])
    .await;

    service
        .send(adduser("192.168.1.31", "04a22b91", 1, FAR))
        .await;
    assert_eq!(service.next().await, ack("adduser", "192.168.1.31"));
    // Numbers as strings and an uppercase uid, as some clients write them.
    let as_sent = json!({ "cmd": "adduser", "doorip": "192.168.1.32", "uid": "04A22B92",
                          "user": "Bea", "acctype": "1", "acctype2": "0",
                          "validsince": "0", "validuntil": FAR.to_string() });
    service.send(as_sent.clone()).await;
    assert_eq!(service.next().await, ack("adduser", "192.168.1.32"));

    service.send(command("getuserlist", "192.168.1.31")).await;
    assert_eq!(
        service.next().await,
        json!({ "command": "userfile", "uid": "04a22b91", "user": "user 04a22b91",
                "acctype": 1, "acctype2": 0, "validsince": 0, "validuntil": FAR })
    );
    service.send(command("getuserlist", "192.168.1.32")).await;
    assert_eq!(service.next().await, as_sent);

    // Each device kept only its own command.
    let [a, b] = [&devices[0], &devices[1]].map(|d| d.snapshot().users);
    assert_eq!(a.len(), 1);
    assert_eq!((b.len(), b[0].uid.as_str()), (1, "04a22b92"));
    assert_eq!(b[0].acctype, [1, 0, 0, 0]);
}

#[tokio::test]
async fn commands_for_another_door_or_garbled_get_no_answer() {
    let (mut service, devices) = setup(vec![config("192.168.1.31")]).await;
    service.send(adduser("192.168.1.99", "01", 1, FAR)).await;
    service.send(json!({ "cmd": "adduser", "uid": "01" })).await;
    service.send_text("{ not json".into()).await;
    service
        .send(command("no-such-command", "192.168.1.31"))
        .await;
    service.send(command("deletlog", "192.168.1.31")).await;
    assert_eq!(service.next().await, ack("deletlog", "192.168.1.31"));
    let snapshot = devices[0].snapshot();
    assert!(snapshot.users.is_empty());
    assert_eq!(
        (snapshot.commands_received, snapshot.commands_ignored),
        (5, 4)
    );

    // A command for this door with a bad field: an error event, and the ack anyway.
    service
        .send(json!({ "cmd": "adduser", "doorip": "192.168.1.31", "uid": "not hex" }))
        .await;
    let error = service.next().await;
    assert_eq!(
        (&error["type"], &error["cmd"]),
        (&json!("ERRO"), &json!("event"))
    );
    assert_eq!(error["hostname"], "esp-192.168.1.31");
    assert_eq!(service.next().await, ack("adduser", "192.168.1.31"));
    assert!(devices[0].snapshot().users.is_empty());
}

#[tokio::test]
async fn deletuid_and_deletusers() {
    let ip = "192.168.1.31";
    let (mut service, devices) = setup(vec![config(ip)]).await;
    for uid in ["0a", "0b", "0c"] {
        service.send(adduser(ip, uid, 1, FAR)).await;
        assert_eq!(service.next().await, ack("adduser", ip));
    }
    // Users are keyed by the lowercased uid.
    service
        .send(json!({ "cmd": "deletuid", "doorip": ip, "uid": "0B" }))
        .await;
    assert_eq!(service.next().await, ack("deletuid", ip));
    // Deleting an absent uid is acknowledged the same.
    service
        .send(json!({ "cmd": "deletuid", "doorip": ip, "uid": "ff" }))
        .await;
    assert_eq!(service.next().await, ack("deletuid", ip));
    let uids: Vec<String> = devices[0]
        .snapshot()
        .users
        .into_iter()
        .map(|u| u.uid)
        .collect();
    assert_eq!(uids, ["0a", "0c"]);

    service.send(command("getuserlist", ip)).await;
    assert_eq!(service.next().await["uid"], "0a");
    assert_eq!(service.next().await["uid"], "0c");

    service.send(command("deletusers", ip)).await;
    assert_eq!(service.next().await, ack("deletusers", ip));
    // An empty list sends nothing: the next message answers the next command.
    service.send(command("getuserlist", ip)).await;
    service.send(command("deletlog", ip)).await;
    assert_eq!(service.next().await, ack("deletlog", ip));
}

#[tokio::test]
async fn a_full_device_acknowledges_what_it_does_not_store() {
    let ip = "192.168.1.31";
    let (mut service, devices) = setup(vec![EspRfidConfig {
        capacity: 2,
        ..config(ip)
    }])
    .await;
    for uid in ["01", "02", "03"] {
        service.send(adduser(ip, uid, 1, FAR)).await;
        assert_eq!(service.next().await, ack("adduser", ip));
    }
    let uids: Vec<String> = devices[0]
        .snapshot()
        .users
        .into_iter()
        .map(|u| u.uid)
        .collect();
    assert_eq!(uids, ["01", "02"]);
}

#[tokio::test]
async fn access_events_with_padded_uids() {
    let ip = "192.168.1.31";
    let (mut service, devices) = setup(vec![EspRfidConfig {
        relays: 2,
        ..config(ip)
    }])
    .await;
    let esp = &devices[0];
    for (uid, acctype, until) in [
        ("04a22b91", 1, FAR),
        ("04a22b92", 1, 1000),
        ("04a22b93", 0, FAR),
    ] {
        service.send(adduser(ip, uid, acctype, until)).await;
        service.next_of("adduser").await;
    }

    let access = esp.present(&[0x04, 0xA2, 0x2B, 0x91]).expect("present");
    assert_eq!(access.access, AccessType::Always);
    let event = service.next().await;
    assert!(event["time"].as_i64().unwrap() > 1_700_000_000);
    assert_eq!(
        event,
        json!({ "type": "access", "time": event["time"], "isKnown": "true", "access": "Always",
                "username": "user 04a22b91", "uid": "04a22b91",
                "hostname": "esp-192.168.1.31", "doorName": "door 192.168.1.31" })
    );
    // acctype2 is 0: only relay 1 opened.
    assert_eq!(esp.snapshot().relay_pulses, [1, 0]);

    assert_eq!(
        esp.present(&[0x04, 0xA2, 0x2B, 0x92]).unwrap().access,
        AccessType::Expired
    );
    let event = service.next().await;
    assert_eq!(
        (&event["access"], &event["isKnown"]),
        (&json!("Expired"), &json!("true"))
    );

    assert_eq!(
        esp.present(&[0x04, 0xA2, 0x2B, 0x93]).unwrap().access,
        AccessType::Disabled
    );
    assert_eq!(service.next().await["access"], "Disabled");

    let unknown = esp.present(&[0x04, 0xA2, 0x2B, 0x99]).unwrap();
    assert!(!unknown.known);
    let event = service.next().await;
    assert_eq!(
        (&event["access"], &event["isKnown"], &event["uid"]),
        (&json!("Denied"), &json!("false"), &json!("04a22b99"))
    );
    assert_eq!(esp.snapshot().relay_pulses, [1, 0]);

    // opendoor pulses every relay and answers nothing.
    service.send(command("opendoor", ip)).await;
    service.send(command("deletlog", ip)).await;
    assert_eq!(service.next().await, ack("deletlog", ip));
    assert_eq!(esp.snapshot().relay_pulses, [2, 1]);
}

#[tokio::test]
async fn access_events_without_leading_zeros() {
    let ip = "192.168.1.31";
    let (mut service, devices) = setup(vec![EspRfidConfig {
        uid_format: UidFormat::NoLeadingZeros,
        ..config(ip)
    }])
    .await;
    let esp = &devices[0];
    // Stored padded: the reader's "4a22b91" does not find it.
    service.send(adduser(ip, "04a22b91", 1, FAR)).await;
    service.next_of("adduser").await;
    assert_eq!(
        esp.present(&[0x04, 0xA2, 0x2B, 0x91]).unwrap().access,
        AccessType::Denied
    );
    let event = service.next().await;
    assert_eq!(
        (&event["uid"], &event["access"]),
        (&json!("4a22b91"), &json!("Denied"))
    );

    service.send(adduser(ip, "4a22b91", 99, 0)).await;
    service.next_of("adduser").await;
    assert_eq!(
        esp.present(&[0x04, 0xA2, 0x2B, 0x91]).unwrap().access,
        AccessType::Admin
    );
    let event = service.next().await;
    assert_eq!(
        (&event["uid"], &event["access"]),
        (&json!("4a22b91"), &json!("Admin"))
    );
}

#[tokio::test]
async fn reboot_keeps_users_and_factory_reset_empties_them() {
    let ip = "192.168.1.31";
    let (mut service, devices) = setup(vec![config(ip)]).await;
    let esp = &devices[0];
    service.send(adduser(ip, "01", 1, FAR)).await;
    service.next_of("adduser").await;

    esp.reboot();
    let boot = service.next().await;
    assert_eq!(
        (&boot["type"], &boot["ip"], &boot["hostname"]),
        (&json!("boot"), &json!(ip), &json!("esp-192.168.1.31"))
    );
    let snapshot = esp.snapshot();
    assert_eq!((snapshot.boots, snapshot.users.len()), (2, 1));
    // The boot message follows the subscription: commands reach the device now.
    service.send(command("getuserlist", ip)).await;
    assert_eq!(service.next().await["uid"], "01");

    esp.factory_reset();
    assert_eq!(service.next().await["type"], "boot");
    assert!(esp.snapshot().users.is_empty());
    service.send(command("getuserlist", ip)).await;
    service.send(command("deletlog", ip)).await;
    assert_eq!(service.next().await, ack("deletlog", ip));
}

#[tokio::test]
async fn updateconf_acknowledges_then_reboots() {
    let ip = "192.168.1.31";
    let (mut service, devices) = setup(vec![config(ip)]).await;
    service.send(command("getconf", ip)).await;
    let conf = service.next().await;
    assert_eq!(conf["type"], "getconf");
    assert_eq!(conf["configfile"]["network"]["ip"], ip);

    let file = json!({ "command": "configfile", "general": { "hostnm": "renamed" } });
    service
        .send(json!({ "cmd": "updateconf", "doorip": ip, "configfile": file }))
        .await;
    assert_eq!(service.next().await, ack("updateconf", ip));
    assert_eq!(service.next().await["type"], "boot");
    assert_eq!(devices[0].snapshot().boots, 2);
    service.send(command("getconf", ip)).await;
    assert_eq!(service.next().await["configfile"], file);
}

#[tokio::test]
async fn lost_commands_and_lost_messages() {
    let ip = "192.168.1.31";
    let (mut service, devices) = setup(vec![config(ip)]).await;
    let esp = &devices[0];

    esp.faults().set_drop_commands(1.0);
    service.send(adduser(ip, "01", 1, FAR)).await;
    wait_until(esp, |s| s.commands_dropped == 1).await;
    esp.faults().set_drop_commands(0.0);
    service.send(command("deletlog", ip)).await;
    assert_eq!(service.next().await, ack("deletlog", ip));
    assert!(esp.snapshot().users.is_empty());

    // A lost ack: the command ran all the same.
    esp.faults().set_drop_messages(1.0);
    service.send(adduser(ip, "02", 1, FAR)).await;
    wait_until(esp, |s| s.messages_dropped == 1).await;
    esp.faults().set_drop_messages(0.0);
    service.send(command("deletlog", ip)).await;
    assert_eq!(service.next().await, ack("deletlog", ip));
    assert_eq!(esp.snapshot().users.len(), 1);
}

#[tokio::test]
async fn heartbeats_come_every_period() {
    let ip = "192.168.1.31";
    let (mut service, _devices) = setup(vec![EspRfidConfig {
        heartbeat_seconds: 1,
        ..config(ip)
    }])
    .await;
    let first = service.next_of("heartbeat").await;
    assert_eq!(
        (&first["ip"], &first["hostname"]),
        (&json!(ip), &json!("esp-192.168.1.31"))
    );
    assert!(first["uptime"].as_u64().unwrap() >= 1);
    let second = service.next_of("heartbeat").await;
    assert!(second["time"].as_i64().unwrap() > first["time"].as_i64().unwrap());
}

#[tokio::test]
async fn offline_then_back_without_a_boot() {
    let ip = "192.168.1.31";
    let (mut service, devices) = setup(vec![config(ip)]).await;
    let esp = &devices[0];
    esp.set_offline(true);
    wait_until(esp, |s| !s.connected && s.offline).await;
    // Not subscribed: the broker does not keep this for the device.
    service.send(adduser(ip, "01", 1, FAR)).await;
    // A badge meanwhile opens the door; its event is lost.
    assert_eq!(esp.present(&[1]).unwrap().access, AccessType::Denied);
    esp.set_offline(false);
    wait_until(esp, |s| s.connected && s.connections == 2).await;
    service.send(command("deletlog", ip)).await;
    assert_eq!(service.next().await, ack("deletlog", ip));
    let snapshot = esp.snapshot();
    assert!(snapshot.users.is_empty());
    assert_eq!((snapshot.boots, snapshot.messages_unsent), (1, 1));
}

#[tokio::test]
async fn a_device_started_offline_with_users_boots_once_online() {
    let ip = "192.168.1.31";
    let broker = EmbeddedBroker::start(&BrokerOptions::default()).expect("broker");
    let mut service = Service::connect(broker.addr().port()).await;
    let user = EspRfidUser {
        uid: "04a22b91".into(),
        user: "Ann".into(),
        acctype: [1, 0, 0, 0],
        validsince: 0,
        validuntil: FAR,
    };
    let esp = EspRfidDevice::start_with(
        config(ip),
        broker.addr().into(),
        EspRfidFaults::seeded(3),
        std::slice::from_ref(&user),
        true,
    )
    .expect("device");
    assert!(esp.is_offline());
    esp.set_offline(false);
    assert_eq!(service.next().await["type"], "boot");
    assert_eq!(esp.snapshot().connections, 1);
    service.send(command("getuserlist", ip)).await;
    let listed = service.next().await;
    assert_eq!(
        (&listed["cmd"], &listed["uid"]),
        (&json!("adduser"), &json!("04a22b91"))
    );
    assert_eq!(esp.snapshot().users, [user]);
}

/// `gardien-sim broker` in a child process, once it listens.
async fn spawn_broker(port: u16) -> Child {
    let mut child = Command::new(env!("CARGO_BIN_EXE_gardien-sim"))
        .args(["broker", "--listen", &format!("127.0.0.1:{port}")])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn gardien-sim broker");
    let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
    let line = next_json(&mut lines).await;
    assert_eq!(line, json!({ "broker": format!("127.0.0.1:{port}") }));
    child
}

async fn next_json(lines: &mut Lines<BufReader<ChildStdout>>) -> Value {
    let line = timeout(PATIENCE, lines.next_line())
        .await
        .expect("gardien-sim answers in time")
        .expect("read stdout")
        .expect("a line");
    serde_json::from_str(&line).expect("JSON line")
}

#[tokio::test]
async fn the_device_comes_back_after_a_broker_restart() {
    let port = free_port(SocketAddr::from(([127, 0, 0, 1], 0)))
        .expect("free port")
        .port();
    let mut broker = spawn_broker(port).await;
    let ip = "192.168.1.31";
    let esp = EspRfidDevice::start(
        config(ip),
        MqttBroker::new("127.0.0.1", port),
        EspRfidFaults::seeded(2),
    )
    .expect("device");
    wait_until(&esp, |s| s.connected).await;

    broker.kill().await.expect("kill the broker");
    wait_until(&esp, |s| !s.connected).await;
    let _broker = spawn_broker(port).await;
    wait_until(&esp, |s| s.connected && s.connections == 2).await;

    // Resubscribed: a command sent now runs.
    let mut service = Service::connect(port).await;
    service.send(adduser(ip, "01", 1, FAR)).await;
    assert_eq!(service.next().await, ack("adduser", ip));
    let snapshot = esp.snapshot();
    assert_eq!((snapshot.users.len(), snapshot.boots), (1, 1));
}

#[tokio::test]
async fn gardien_sim_runs_the_esprfid_example() {
    let file = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/esprfid.toml");
    let mut child = Command::new(env!("CARGO_BIN_EXE_gardien-sim"))
        .arg(file)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn gardien-sim");
    let mut stdin = child.stdin.take().unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let broker: SocketAddr = next_json(&mut lines).await["broker"]
        .as_str()
        .expect("broker line first")
        .parse()
        .unwrap();
    let gate = next_json(&mut lines).await;
    assert_eq!(
        gate,
        json!({ "name": "gate", "kind": "esprfid", "mqtt": broker.to_string(),
                "topic": "residence", "ip": "192.168.1.31", "hostname": "esp-rfid-gate" })
    );
    assert_eq!(next_json(&mut lines).await["name"], "bikes");

    let mut service = Service::connect(broker.port()).await;
    let mut send = async |line: &str| {
        stdin
            .write_all(format!("{line}\n").as_bytes())
            .await
            .unwrap();
        next_json(&mut lines).await
    };
    let deadline = Deadline::after(PATIENCE);
    while send("status gate").await["result"]["connected"] != true {
        deadline.tick().await;
    }
    let answer = send("present gate 04A22B91").await;
    assert_eq!(answer["result"]["access"], "Always");
    let event = service.next_of("access").await;
    assert_eq!(
        (&event["doorName"], &event["uid"]),
        (&json!("Portail"), &json!("04a22b91"))
    );
    assert_eq!(
        send("status gate").await["result"]["relay_pulses"],
        json!([1, 1])
    );
    assert_eq!(
        send("present gate 0411223344").await["result"]["access"],
        "Expired"
    );
    assert_eq!(
        send("present bikes 04A22B91").await["result"]["access"],
        "Denied"
    );
    assert_eq!(send("present gate zz").await["ok"], false);

    // Users from the file are listed as the adduser messages the firmware would store.
    service.send(command("getuserlist", "192.168.1.31")).await;
    let mut listed = Vec::new();
    for _ in 0..2 {
        let user = service.next_where(|m| m["cmd"] == "adduser").await;
        assert_eq!(user["doorip"], "192.168.1.31");
        listed.push(user["uid"].as_str().unwrap().to_owned());
    }
    assert_eq!(listed, ["0411223344", "04a22b91"]);
    assert_eq!(send("drop gate 1").await["ok"], true);
    assert_eq!(send("offline bikes").await["ok"], true);
    assert_eq!(send("status bikes").await["result"]["offline"], true);
    assert_eq!(send("reboot gate").await["ok"], true);
    assert_eq!(send("factory-reset gate").await["ok"], true);
    assert_eq!(send("status gate").await["result"]["users"], json!([]));
    assert_eq!(send("quit").await["ok"], true);
    let status = timeout(PATIENCE, child.wait()).await.unwrap().unwrap();
    assert!(status.success());
}
