//! Benchmarks of gardien over MQTT. They measure and print; they assert nothing about
//! time. Run with `cargo bench --bench mqtt` (release build).
//!
//! Everything runs in one process on loopback: the embedded broker (rumqttd, on its own
//! threads), gardien's MQTT connection and inbox, the API, the sync engine, the
//! simulated esp-rfid controllers and wmbusmeters publisher, and the measuring client
//! share one tokio runtime and the machine's cores.
//!
//! 0. Baselines: MQTT round trips through the broker with raw rumqttc clients
//!    (publish → receive, QoS 0 and 1; a burst of 41 messages, the size of a user
//!    list; a command at QoS 1 and at QoS 0 and its answer through an echo client).
//! 1. Lost badge → confirmed on every esp-rfid controller: a badge held by all the
//!    controllers is declared lost through the API (as `lock_sync` part 1 does), and the
//!    key's `key_sync` rows are polled in the database until every one is confirmed,
//!    which for esp-rfid means the removal was read back in each controller's user list.
//!    Three sites, each with its own database, connection and devices on the same
//!    broker: 1 controller (the baseline), 50 controllers sharing one topic (what the
//!    esp-rfid project recommends; gardien reads a controller alone on its topic until
//!    it has seen that its list messages name it, then alongside the others), 50
//!    controllers with one topic each. Messages per removal are counted on the
//!    simulated controllers (commands that reached them, messages they sent), and a
//!    driver-level user-list read on each site gives the cost of one read.
//! 2. Sustained ingestion of wmbusmeters telegrams: the simulated publisher
//!    (`gardien_simulators::wmbus`) sends one telegram per meter and round for 2,000
//!    water meters, as fast as it goes (QoS 1); the time until the database holds every
//!    reading gives messages per second end to end. Baseline: the same publisher to a
//!    subscriber that only counts. Then the first run's telegrams again (all duplicates:
//!    nothing may be stored twice). The bench counts rows on its own read-only SQLite
//!    connection.
//!
//! `MQTT_BENCH_RUNS` (default 10) sets the lost-badge runs per site and engine
//! concurrency; `MQTT_BENCH_TELEGRAMS` (default 20,000) the telegrams per ingestion run.
//! About 3 minutes on 2 cores with the defaults. `cargo test --all-targets` builds this
//! file and runs it without `--bench`: it then only says so and returns.

mod common;

use common::service::{Api, Service};
use common::{load_average, median_min_max, ms, secs, section, summarize, us, Summary};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, NaiveDate, Utc};
use gardien::demo::meters::kind_of;
use gardien::domain::meter::MeasureUnit;
use gardien::domain::{LockKind, Policy, SyncState, Transport, UnitKind};
use gardien::mqtt::config::WmbusSubscription;
use gardien::mqtt::inbox::InboxStats;
use gardien::mqtt::{Mqtt, MqttConfig};
use gardien::storage::audit::Actor;
use gardien::storage::controllers::ControllerInput;
use gardien::storage::keys::KeyInput;
use gardien::storage::locks::LockInput;
use gardien::storage::meters::MeterInput;
use gardien::storage::profiles::ProfileInput;
use gardien::storage::residences::ResidenceInput;
use gardien::storage::units::UnitInput;
use gardien::storage::Store;
use gardien::sync::SyncConfig;
use gardien_drivers::esprfid::EspRfid;
use gardien_drivers::LockController;
use gardien_simulators::broker::{BrokerOptions, EmbeddedBroker};
use gardien_simulators::esprfid::{
    EspRfidConfig, EspRfidDevice, EspRfidFaults, EspRfidSnapshot, MqttBroker, UidFormat,
};
use gardien_simulators::mbg::{population, Unit};
use gardien_simulators::wmbus::{WmbusConfig, WmbusPublisher};
use gardien_simulators::{BusMeter, SimClock};
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, Publish, QoS};
use serde_json::json;
use sqlx::sqlite::{SqliteConnectOptions, SqlitePool, SqlitePoolOptions};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

/// Part 0: round trips measured, after a warm-up.
const RTT_SAMPLES: usize = 1000;
const RTT_WARMUP: usize = 100;
/// A burst the size of a 40-user list and its closing configuration.
const BURST: usize = 41;
const BURST_SAMPLES: usize = 200;
const BURST_WARMUP: usize = 20;
/// Command → answer round trips (one costs tens of milliseconds at QoS 1).
const CMD_SAMPLES: usize = 100;
const CMD_WARMUP: usize = 10;

/// Part 1: controllers of the big sites, badges every controller keeps throughout,
/// lost-badge runs per site and concurrency bound (`MQTT_BENCH_RUNS` overrides).
const CONTROLLERS: usize = 50;
const RESIDENT_BADGES: usize = 40;
const RUNS: usize = 10;
const WARMUP_RUNS: usize = 1;
/// How often the measuring client looks at the key's key_sync rows.
const POLL: Duration = Duration::from_millis(5);
/// Driver-level user-list reads per site.
const LIST_READS: usize = 20;

/// Part 2: water meters on the air, telegrams per run (`MQTT_BENCH_TELEGRAMS`
/// overrides), runs.
const METERS: usize = 2000;
const TELEGRAMS: usize = 20_000;
const INGEST_RUNS: usize = 3;
const BASELINE_RUNS: usize = 3;
/// How often the database is counted during an ingestion run.
const COUNT_POLL: Duration = Duration::from_millis(10);
/// Virtual time between two rounds of telegrams.
const ROUND_SECONDS: i64 = 3600;
const DAY: i64 = 86_400;

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --all-targets` runs benches without it.
    if !std::env::args().any(|arg| arg == "--bench") {
        println!("mqtt: a benchmark; run it with `cargo bench --bench mqtt`");
        return;
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let started = Instant::now();
    runtime.block_on(async {
        machine();
        let broker = EmbeddedBroker::start(&BrokerOptions::default()).expect("embedded broker");
        println!(
            "  broker           embedded rumqttd on {} (its own threads, same process)",
            broker.addr()
        );
        let baselines = round_trips(broker.addr()).await;
        lost_badge(broker.addr(), &baselines).await;
        wmbus_ingestion(broker.addr()).await;
    });
    println!();
    println!(
        "Total benchmark time: {:.1} s; load average at the end {}",
        started.elapsed().as_secs_f64(),
        load_average()
    );
}

// ---------------------------------------------------------------------------------
// Report helpers
// ---------------------------------------------------------------------------------

fn machine() {
    let m = common::machine();
    println!("gardien MQTT benchmarks (cargo bench --bench mqtt)");
    println!("==================================================");
    println!("Machine");
    println!("  CPU model        {}", m.model);
    println!(
        "  cores            {} logical in /proc/cpuinfo, {} available to this process",
        m.logical, m.available
    );
    println!("  memory           {}", m.memory);
    println!("  kernel           Linux {}", m.kernel);
    println!("  runtime          tokio multi-thread, {} workers; API, engine, inbox, simulators and client share them", m.available);
    println!("  database         SQLite files (WAL) in temporary directories");
    println!(
        "  load average     {} (at start; other processes on the machine skew the numbers)",
        load_average()
    );
}

fn print_summary(label: &str, samples: &[Duration], unit: fn(Duration) -> String) {
    let s = summarize(samples);
    println!(
        "  {label:<46} median {:>10}  p90 {:>10}  min {:>10}  max {:>10}  mean {:>10}  (n={})",
        unit(s.median),
        unit(s.p90),
        unit(s.min),
        unit(s.max),
        unit(s.mean),
        s.n
    );
}

fn env_count(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|value| value.replace('_', "").parse::<usize>().ok())
        .filter(|&count| count > 0)
        .unwrap_or(default)
}

// ---------------------------------------------------------------------------------
// Raw MQTT clients
// ---------------------------------------------------------------------------------

/// A plain rumqttc client: counts what arrives and, if asked, hands it over.
struct RawClient {
    client: AsyncClient,
    incoming: mpsc::UnboundedReceiver<Publish>,
    received: Arc<AtomicU64>,
    task: JoinHandle<()>,
}

impl Drop for RawClient {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Connects, subscribes to `filters` at `qos`, and returns once the broker has
/// acknowledged the connection and every subscription.
async fn raw_client(
    broker: SocketAddr,
    id: &str,
    filters: &[&str],
    qos: QoS,
    forward: bool,
) -> RawClient {
    let mut options = MqttOptions::new(id, broker.ip().to_string(), broker.port());
    options.set_keep_alive(Duration::from_secs(5));
    let (client, mut event_loop) = AsyncClient::new(options, 1000);
    for filter in filters {
        client.subscribe(*filter, qos).await.expect("subscribe");
    }
    let (sender, incoming) = mpsc::unbounded_channel();
    let received = Arc::new(AtomicU64::new(0));
    let counter = received.clone();
    let (ready_tx, ready) = oneshot::channel::<()>();
    let wanted = filters.len();
    let task = tokio::spawn(async move {
        let mut ready_tx = Some(ready_tx);
        let mut acks = 0;
        loop {
            match event_loop.poll().await {
                Ok(Event::Incoming(Packet::ConnAck(_))) if wanted == 0 => {
                    if let Some(ready) = ready_tx.take() {
                        let _ = ready.send(());
                    }
                }
                Ok(Event::Incoming(Packet::SubAck(_))) => {
                    acks += 1;
                    if acks >= wanted {
                        if let Some(ready) = ready_tx.take() {
                            let _ = ready.send(());
                        }
                    }
                }
                Ok(Event::Incoming(Packet::Publish(publish))) => {
                    counter.fetch_add(1, Ordering::Relaxed);
                    if forward {
                        let _ = sender.send(publish);
                    }
                }
                Ok(_) => {}
                Err(error) => {
                    eprintln!("raw MQTT client: {error}; retrying");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    });
    tokio::time::timeout(Duration::from_secs(10), ready)
        .await
        .expect("raw MQTT client ready within 10 s")
        .expect("raw MQTT client running");
    RawClient {
        client,
        incoming,
        received,
        task,
    }
}

// ---------------------------------------------------------------------------------
// 0. Baselines: MQTT round trips
// ---------------------------------------------------------------------------------

/// What part 1 is read against.
struct Baselines {
    /// A QoS 1 command and its QoS 0 answer through an echo client (median).
    command_answer: Duration,
    /// A list-sized burst (median).
    burst: Duration,
}

async fn round_trips(broker: SocketAddr) -> Baselines {
    section("0. Baselines: MQTT through the embedded broker, raw rumqttc clients (same run)");
    println!("  one message at a time, {RTT_WARMUP} warm-up then {RTT_SAMPLES} measured; payload: a 60-byte JSON command");
    let payload = br#"{"cmd":"deletuid","uid":"04b10001","doorip":"10.0.0.1"}"#.to_vec();
    let mut listener = raw_client(
        broker,
        "bench-rtt-listener",
        &["bench/rtt/one"],
        QoS::AtLeastOnce,
        true,
    )
    .await;
    let talker = raw_client(broker, "bench-rtt-talker", &[], QoS::AtLeastOnce, false).await;
    for (label, qos) in [
        ("publish → received, QoS 0", QoS::AtMostOnce),
        ("publish → received, QoS 1", QoS::AtLeastOnce),
    ] {
        let mut samples = Vec::with_capacity(RTT_SAMPLES);
        for round in 0..RTT_WARMUP + RTT_SAMPLES {
            let start = Instant::now();
            talker
                .client
                .publish("bench/rtt/one", qos, false, payload.clone())
                .await
                .expect("publish");
            tokio::time::timeout(Duration::from_secs(5), listener.incoming.recv())
                .await
                .expect("message within 5 s")
                .expect("listener running");
            if round >= RTT_WARMUP {
                samples.push(start.elapsed());
            }
        }
        print_summary(label, &samples, us);
    }

    // A burst the size of a user list: what an esp-rfid publishes after getuserlist
    // (one message per user, QoS 0, back to back) and gardien waits for in full.
    let user = br#"{"cmd":"adduser","uid":"04b10001","user":"gardien","acctype":1,"acctype2":0,"acctype3":0,"acctype4":0,"validsince":0,"validuntil":4102444800,"doorip":"10.0.0.1"}"#.to_vec();
    let mut samples = Vec::with_capacity(BURST_SAMPLES);
    for round in 0..BURST_WARMUP + BURST_SAMPLES {
        let start = Instant::now();
        for _ in 0..BURST {
            talker
                .client
                .publish("bench/rtt/one", QoS::AtMostOnce, false, user.clone())
                .await
                .expect("publish");
        }
        for _ in 0..BURST {
            tokio::time::timeout(Duration::from_secs(5), listener.incoming.recv())
                .await
                .expect("message within 5 s")
                .expect("listener running");
        }
        if round >= BURST_WARMUP {
            samples.push(start.elapsed());
        }
    }
    print_summary(
        &format!("burst of {BURST} × {} B, QoS 0 → all received", user.len()),
        &samples,
        us,
    );
    let burst = summarize(&samples).median;
    drop(listener);

    // A command and its answer: what gardien's driver does for each esp-rfid command.
    // The echo client stands for the device: subscribed to .../cmd, it answers on
    // .../send at QoS 0 (as the firmware publishes). With a QoS 1 command, its client
    // sends the PUBACK and then the answer; with QoS 0, only the answer.
    let mut medians = Vec::new();
    for (label, qos) in [
        (
            "command (QoS 1) → answer (QoS 0), via echo",
            QoS::AtLeastOnce,
        ),
        (
            "command (QoS 0) → answer (QoS 0), via echo",
            QoS::AtMostOnce,
        ),
    ] {
        let samples = command_answer(broker, &payload, qos).await;
        print_summary(label, &samples, us);
        medians.push(summarize(&samples).median);
    }
    println!(
        "  ({CMD_WARMUP} warm-up then {CMD_SAMPLES} measured each.) One-way messages and bursts take well under a millisecond,"
    );
    println!(
        "  an answer to a message just received tens of milliseconds: raw rumqttc clients and the embedded rumqttd, no"
    );
    println!(
        "  gardien code. gardien publishes esp-rfid commands at QoS 1 and the simulated controllers answer at QoS 0 from"
    );
    println!("  rumqttc clients, as in the first of these two lines: each command and list read below pays it.");
    Baselines {
        command_answer: medians[0],
        burst,
    }
}

/// Command → answer round trips through an echo client, at `qos` end to end.
async fn command_answer(broker: SocketAddr, payload: &[u8], qos: QoS) -> Vec<Duration> {
    let tag = match qos {
        QoS::AtMostOnce => 0,
        QoS::AtLeastOnce => 1,
        QoS::ExactlyOnce => 2,
    };
    let mut echo = raw_client(
        broker,
        &format!("bench-rtt-echo-{tag}"),
        &["bench/rtt/cmd"],
        qos,
        true,
    )
    .await;
    let echo_client = echo.client.clone();
    let echo_task = tokio::spawn(async move {
        while echo.incoming.recv().await.is_some() {
            let answer = br#"{"type":"deletuid","ip":"10.0.0.1","hostname":"esp"}"#.to_vec();
            if echo_client
                .publish("bench/rtt/send", QoS::AtMostOnce, false, answer)
                .await
                .is_err()
            {
                return;
            }
        }
    });
    let mut asker = raw_client(
        broker,
        &format!("bench-rtt-asker-{tag}"),
        &["bench/rtt/send"],
        QoS::AtLeastOnce,
        true,
    )
    .await;
    let mut samples = Vec::with_capacity(CMD_SAMPLES);
    for round in 0..CMD_WARMUP + CMD_SAMPLES {
        let start = Instant::now();
        asker
            .client
            .publish("bench/rtt/cmd", qos, false, payload.to_vec())
            .await
            .expect("publish");
        tokio::time::timeout(Duration::from_secs(5), asker.incoming.recv())
            .await
            .expect("answer within 5 s")
            .expect("asker running");
        if round >= CMD_WARMUP {
            samples.push(start.elapsed());
        }
    }
    echo_task.abort();
    samples
}

// ---------------------------------------------------------------------------------
// The service: API, MQTT connection and engine over a SQLite file
// ---------------------------------------------------------------------------------

/// gardien's `[mqtt]` for the bench broker.
fn mqtt_config(broker: SocketAddr, client_id: &str, wmbus: Vec<WmbusSubscription>) -> MqttConfig {
    MqttConfig {
        enabled: true,
        host: broker.ip().to_string(),
        port: broker.port(),
        client_id: Some(client_id.to_owned()),
        keep_alive_seconds: 5,
        reconnect_max_seconds: 1,
        wmbus,
        ..MqttConfig::default()
    }
}

/// Waits until `done` holds, checking every 10 ms; false after `patience`.
async fn wait_for(patience: Duration, mut done: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + patience;
    while !done() {
        if Instant::now() > deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    true
}

// ---------------------------------------------------------------------------------
// 1. Lost badge to confirmation on esp-rfid controllers
// ---------------------------------------------------------------------------------

/// One site of part 1.
struct Setup {
    /// Short name, in client ids and topics.
    tag: &'static str,
    label: String,
    controllers: usize,
    shared_topic: bool,
    concurrencies: Vec<usize>,
}

impl Setup {
    fn topic(&self, index: usize) -> String {
        if self.shared_topic {
            format!("bench-{}/portes", self.tag)
        } else {
            format!("bench-{}/porte-{:02}", self.tag, index + 1)
        }
    }

    fn ip(&self, index: usize) -> String {
        format!("10.0.{}.{}", index / 250, index % 250 + 1)
    }

    fn address(&self, index: usize) -> String {
        format!("{}@{}", self.topic(index), self.ip(index))
    }
}

/// What one lost badge cost.
struct LostRun {
    /// POST declare-lost sent → every key_sync row of the key seen confirmed.
    total: Duration,
    /// POST declare-lost sent → its answer received.
    api: Duration,
    /// POST sent → earliest / latest `confirmed_at` the visits wrote.
    first: Duration,
    last: Duration,
    traffic: Traffic,
}

/// Messages through the broker, summed over a site's simulated controllers.
#[derive(Debug, Default, Clone, Copy)]
struct Traffic {
    /// Commands that reached a controller (on a shared topic, each reaches them all).
    delivered: u64,
    /// Commands a controller acted on (its own `doorip`): what gardien published.
    handled: u64,
    /// Messages the controllers published (acks, users of lists, configurations).
    sent: u64,
}

impl Traffic {
    fn of(devices: &[EspRfidDevice]) -> Traffic {
        devices.iter().map(EspRfidDevice::snapshot).fold(
            Traffic::default(),
            |sum, s: EspRfidSnapshot| Traffic {
                delivered: sum.delivered + s.commands_received,
                handled: sum.handled
                    + s.commands_received
                        .saturating_sub(s.commands_ignored + s.commands_dropped),
                sent: sum.sent + s.messages_sent,
            },
        )
    }

    fn since(self, before: Traffic) -> Traffic {
        Traffic {
            delivered: self.delivered.saturating_sub(before.delivered),
            handled: self.handled.saturating_sub(before.handled),
            sent: self.sent.saturating_sub(before.sent),
        }
    }
}

/// What a site's runs gave, for the summary table.
struct SiteResult {
    label: String,
    concurrency: usize,
    total: Summary,
    controllers: usize,
    traffic: (f64, f64, f64),
    list_read: Duration,
}

async fn lost_badge(broker: SocketAddr, baselines: &Baselines) {
    let runs = env_count("MQTT_BENCH_RUNS", RUNS);
    section(
        "1. Lost badge → confirmed on every esp-rfid controller (HTTP API + engine + MQTT through the broker)",
    );
    let setups = [
        Setup {
            tag: "one",
            label: "1 controller (baseline)".into(),
            controllers: 1,
            shared_topic: true,
            concurrencies: vec![16],
        },
        Setup {
            tag: "shared",
            label: format!("{CONTROLLERS} controllers, one shared topic"),
            controllers: CONTROLLERS,
            shared_topic: true,
            concurrencies: vec![16, CONTROLLERS],
        },
        Setup {
            tag: "apart",
            label: format!("{CONTROLLERS} controllers, one topic each"),
            controllers: CONTROLLERS,
            shared_topic: false,
            concurrencies: vec![16, CONTROLLERS],
        },
    ];
    let defaults = SyncConfig::default();
    let config = engine_config(16);
    println!(
        "  controllers: simulated esp-rfid (gardien_simulators::esprfid, 1 relay, stored-command list shape, no faults, hourly heartbeat),"
    );
    println!(
        "               model \"esp-rfid\" (profile esprfid-v2: ack timeout 500 ms, list timeout 5000 ms), one lock on door 1 each;"
    );
    println!(
        "               one profile with every lock; badges (vigik_badge, 4-byte uid) with that profile, seeded through the Store."
    );
    println!(
        "  engine: poll {} ms, routine {} s, audit {} s, visit timeout {} s (SyncConfig default poll {} ms, routine {} s),",
        config.poll_ms,
        config.routine_seconds,
        config.audit_seconds,
        config.visit_timeout_seconds,
        defaults.poll_ms,
        defaults.routine_seconds
    );
    println!(
        "          so only the lost badge makes visits; a visit = list read (identify), deletuid, list read (verify)."
    );
    println!(
        "  method: per run, start the engine, POST /keys/{{id}}/declare-lost (bearer), poll the key's key_sync rows every"
    );
    println!(
        "          {} ms until every row is confirmed with doors 0, stop the engine; {runs} runs per bound (MQTT_BENCH_RUNS),",
        POLL.as_millis()
    );
    println!(
        "          alternating the bounds; {WARMUP_RUNS} warm-up run(s) per bound not counted. Every controller keeps {RESIDENT_BADGES} other badges,"
    );
    println!(
        "          so its user list shrinks from {RESIDENT_BADGES} + the badges still to lose, to {RESIDENT_BADGES}."
    );
    println!(
        "  messages: counted on the simulated controllers (commands that reached them, commands for their own doorip,"
    );
    println!("          messages they published), between the POST and the engine's stop.");

    let mut results = Vec::new();
    for setup in &setups {
        results.extend(site_runs(broker, setup, runs).await);
    }

    println!();
    println!("  Summary (lost → confirmed on all, poll seen; messages per removal, whole site; list read = driver identify)");
    println!(
        "  {:<40} {:>5} {:>11} {:>11} {:>11} {:>9} {:>10} {:>10} {:>10} {:>10}",
        "site",
        "bound",
        "median",
        "min",
        "max",
        "per ctrl",
        "published",
        "delivered",
        "dev. sent",
        "list read"
    );
    for result in &results {
        println!(
            "  {:<40} {:>5} {:>11} {:>11} {:>11} {:>9} {:>10.1} {:>10.1} {:>10.1} {:>10}",
            result.label,
            result.concurrency,
            ms(result.total.median),
            ms(result.total.min),
            ms(result.total.max),
            ms(result.total.median / result.controllers as u32),
            result.traffic.0,
            result.traffic.1,
            result.traffic.2,
            ms(result.list_read),
        );
    }
    println!("  published = commands gardien sent (handled by their controller); delivered = commands the broker handed to");
    println!("  controllers (× the controllers on a shared topic); dev. sent = messages the controllers published to gardien.");
    println!(
        "  Against part 0: command (QoS 1) → answer through the broker {}, a list-sized burst {}. A removal visit is a list",
        ms(baselines.command_answer),
        ms(baselines.burst)
    );
    println!(
        "  read (getuserlist + getconf, then the users and the configuration), a deletuid and its ack, and a second list read;"
    );
    println!(
        "  on one shared topic, a controller is read alone until its list is seen to name it (doorip), then with the others."
    );
}

fn engine_config(concurrency: usize) -> SyncConfig {
    SyncConfig {
        concurrency,
        poll_ms: 50,
        routine_seconds: 86_400,
        audit_seconds: 7 * 86_400,
        visit_timeout_seconds: 30,
        instance_id: Some("bench".into()),
        ..SyncConfig::default()
    }
}

/// Residence, controllers, locks, one profile and the badges, in one transaction.
/// Answers (residence, controllers, keys).
async fn seed_site(store: &Store, setup: &Setup, badges: usize) -> (i64, Vec<i64>, Vec<i64>) {
    let actor = Actor::system("bench");
    let mut tx = store.write().await.expect("write");
    let residence = ResidenceInput {
        name: format!("Résidence {}", setup.label),
        address: "1 rue du Banc d'Essai".into(),
    }
    .validated()
    .expect("valid residence");
    let rid = tx
        .insert_residence(&actor, &residence)
        .await
        .expect("residence")
        .id;
    let mut controllers = Vec::with_capacity(setup.controllers);
    let mut locks = Vec::with_capacity(setup.controllers);
    for index in 0..setup.controllers {
        let input = ControllerInput {
            name: format!("Porte {:02}", index + 1),
            model: "esp-rfid".into(),
            transport: Transport::Mqtt,
            address: setup.address(index),
            modbus_unit: None,
            notes: String::new(),
            policy: Policy::default(),
        }
        .validated()
        .expect("valid controller");
        let controller = tx
            .insert_controller(&actor, rid, &input)
            .await
            .expect("controller")
            .id;
        let lock = LockInput {
            name: format!("Hall {:02}", index + 1),
            kind: LockKind::Door,
            building_id: None,
            controller_id: Some(controller),
            door_number: Some(1),
        };
        locks.push(tx.insert_lock(&actor, rid, &lock).await.expect("lock").id);
        controllers.push(controller);
    }
    let profile = ProfileInput {
        name: "Tous les halls".into(),
        description: String::new(),
        lock_ids: locks,
    };
    let profile = tx
        .insert_profile(&actor, rid, &profile)
        .await
        .expect("profile")
        .id;
    let mut keys = Vec::with_capacity(badges);
    for index in 0..badges {
        let input: KeyInput = serde_json::from_value(json!({
            "kind": "vigik_badge", "identifier": badge(index), "profile_ids": [profile]
        }))
        .expect("key input");
        let input = input.validated().expect("valid key");
        keys.push(tx.insert_key(&actor, rid, &input).await.expect("key").id);
    }
    tx.commit().await.expect("commit");
    (rid, controllers, keys)
}

fn badge(index: usize) -> String {
    format!("04B1{index:04X}")
}

/// Waits until no key_sync row of these controllers is pending; panics on a failed row.
async fn wait_until_all_confirmed(store: &Store, controllers: &[i64]) {
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        let mut pending = 0;
        let mut tx = store.read().await.expect("read");
        for &controller in controllers {
            for row in tx
                .key_sync_of_controller(controller)
                .await
                .expect("key_sync rows")
            {
                match row.state {
                    SyncState::Pending => pending += 1,
                    SyncState::Failed => panic!("row failed: {row:?}"),
                    SyncState::Confirmed => {}
                }
            }
        }
        drop(tx);
        if pending == 0 {
            return;
        }
        if Instant::now() > deadline {
            panic!("{pending} key_sync rows still pending after 600 s");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn site_runs(broker: SocketAddr, setup: &Setup, runs: usize) -> Vec<SiteResult> {
    let bounds = setup.concurrencies.len();
    let lost_badges = (runs + WARMUP_RUNS) * bounds;
    let badges = RESIDENT_BADGES + lost_badges;
    let mut service = Service::start().await;
    let api = service.admin().await;
    let start = Instant::now();
    let (rid, controllers, keys) = seed_site(&service.store, setup, badges).await;
    let seeded = start.elapsed();

    // gardien's connection first, so that it hears the controllers' boot messages.
    let mqtt = Mqtt::start(
        service.store.clone(),
        &mqtt_config(broker, &format!("gardien-bench-{}", setup.tag), Vec::new()),
        &format!("bench-{}", setup.tag),
    )
    .await
    .expect("gardien's MQTT connection");
    let stats = mqtt.stats();
    let probe = raw_client(
        broker,
        &format!("bench-probe-{}", setup.tag),
        &[],
        QoS::AtLeastOnce,
        false,
    )
    .await;
    let probe_topic = format!("{}/send", setup.topic(0));
    let heard = {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            probe
                .client
                .publish(
                    probe_topic.as_str(),
                    QoS::AtLeastOnce,
                    false,
                    br#"{"type":"bench-probe"}"#.to_vec(),
                )
                .await
                .expect("probe");
            if wait_for(Duration::from_millis(200), || {
                stats.received.load(Ordering::Relaxed) > 0
            })
            .await
            {
                break true;
            }
            if Instant::now() > deadline {
                break false;
            }
        }
    };
    drop(probe);
    if !heard {
        println!("  WARNING: gardien did not receive the probe within 10 s");
    }

    let start = Instant::now();
    let devices: Vec<EspRfidDevice> = (0..setup.controllers)
        .map(|index| {
            EspRfidDevice::start(
                EspRfidConfig {
                    topic: setup.topic(index),
                    ip: setup.ip(index),
                    hostname: format!("esp-{}-{:02}", setup.tag, index + 1),
                    door_name: format!("Hall {:02}", index + 1),
                    relays: 1,
                    uid_format: UidFormat::Padded,
                    // No heartbeat during the runs: only the removals' messages count.
                    heartbeat_seconds: 3600,
                    reconnect_delay: Duration::from_millis(200),
                    ..EspRfidConfig::default()
                },
                MqttBroker::from(broker),
                EspRfidFaults::seeded(index as u64 + 1),
            )
            .expect("simulated esp-rfid")
        })
        .collect();
    let connected = wait_for(Duration::from_secs(20), || {
        devices.iter().all(|d| d.snapshot().connected)
            && stats.controller_messages.load(Ordering::Relaxed) >= setup.controllers as u64
    })
    .await;
    if !connected {
        println!(
            "  WARNING: after 20 s, {} of {} controllers connected, {} boot messages heard",
            devices.iter().filter(|d| d.snapshot().connected).count(),
            setup.controllers,
            stats.controller_messages.load(Ordering::Relaxed)
        );
    }
    let up = start.elapsed();

    // First programming: every badge onto every controller.
    service.start_engine(
        engine_config(setup.concurrencies[0]),
        Some(mqtt.channel().clone()),
    );
    let start = Instant::now();
    wait_until_all_confirmed(&service.store, &controllers).await;
    let programmed = start.elapsed();
    service.stop_engine().await;
    let held: Vec<usize> = devices.iter().map(|d| d.snapshot().users.len()).collect();
    if held.iter().any(|&users| users != badges) {
        println!("  WARNING: the controllers do not all hold {badges} badges: {held:?}");
    }

    println!();
    println!("  {}", setup.label);
    println!(
        "    setup: {} controller(s) on {}, {badges} badges seeded through the Store in {}; controllers connected and their",
        setup.controllers,
        if setup.shared_topic {
            format!("topic {}", setup.topic(0))
        } else {
            format!("topics {} …", setup.topic(0))
        },
        ms(seeded)
    );
    println!(
        "           boots heard by gardien in {}; first programming ({} entries) at concurrency {}: {}",
        ms(up),
        badges * setup.controllers,
        setup.concurrencies[0],
        secs(programmed)
    );

    let mut results: BTreeMap<usize, Vec<LostRun>> = BTreeMap::new();
    let mut next_key = keys.iter().enumerate();
    for round in 0..WARMUP_RUNS + runs {
        for &concurrency in &setup.concurrencies {
            let (index, &key) = next_key.next().expect("enough badges");
            service.start_engine(engine_config(concurrency), Some(mqtt.channel().clone()));
            // Let the engine finish its first look for work and wait for more.
            tokio::time::sleep(Duration::from_millis(30)).await;
            let before = Traffic::of(&devices);
            let mut run = lose_one(&service.store, &api, rid, key, setup.controllers).await;
            service.stop_engine().await;
            run.traffic = Traffic::of(&devices).since(before);
            let uid = badge(index).to_lowercase();
            let still = devices
                .iter()
                .filter(|d| d.snapshot().users.iter().any(|user| user.uid == uid))
                .count();
            if still > 0 {
                println!(
                    "    WARNING: badge {uid} confirmed removed but still on {still} controller(s)"
                );
            }
            if round >= WARMUP_RUNS {
                results.entry(concurrency).or_default().push(run);
            }
        }
    }

    // A driver-level list read on this site, engine stopped: the cost of one read.
    let list_read = list_reads(&service.store, &mqtt, &setup.address(0)).await;
    let users_now = devices
        .first()
        .map(|d| d.snapshot().users.len())
        .unwrap_or_default();

    let mut site = Vec::new();
    for (concurrency, runs) in &results {
        println!("    engine concurrency {concurrency}:");
        let total: Vec<Duration> = runs.iter().map(|r| r.total).collect();
        print_summary(
            &format!(
                "  lost → confirmed on all {} (poll seen)",
                setup.controllers
            ),
            &total,
            ms,
        );
        let last: Vec<Duration> = runs.iter().map(|r| r.last).collect();
        print_summary("  lost → last confirmed_at written", &last, ms);
        let first: Vec<Duration> = runs.iter().map(|r| r.first).collect();
        print_summary("  lost → first confirmed_at written", &first, ms);
        let api_time: Vec<Duration> = runs.iter().map(|r| r.api).collect();
        print_summary("  declare-lost HTTP answer", &api_time, ms);
        let n = runs.len().max(1) as f64;
        let mean = |field: fn(&Traffic) -> u64| {
            runs.iter().map(|r| field(&r.traffic)).sum::<u64>() as f64 / n
        };
        let traffic = (mean(|t| t.handled), mean(|t| t.delivered), mean(|t| t.sent));
        let per = setup.controllers as f64;
        println!(
            "      messages per removal (mean): gardien published {:.1} commands ({:.2} per controller), the broker delivered",
            traffic.0,
            traffic.0 / per
        );
        println!(
            "      {:.1} to controllers ({:.2} per controller); controllers published {:.1} ({:.2} per controller)",
            traffic.1,
            traffic.1 / per,
            traffic.2,
            traffic.2 / per
        );
        let summary = summarize(&total);
        println!(
            "      median total / {} controller(s) = {} per controller",
            setup.controllers,
            ms(summary.median / setup.controllers as u32)
        );
        site.push(SiteResult {
            label: setup.label.clone(),
            concurrency: *concurrency,
            total: summary,
            controllers: setup.controllers,
            traffic,
            list_read: list_read.median,
        });
    }
    println!(
        "    protocol minimum per controller: deletuid + getuserlist + getconf = 3 commands; ack + users + configuration back"
    );
    println!(
        "    (a visit reads the list before and after: 5 commands, 2 lists); lists held {}–{} users during the runs",
        RESIDENT_BADGES + 1,
        RESIDENT_BADGES + lost_badges
    );
    print_summary(
        &format!("  driver list read ({users_now} users, engine stopped)"),
        &list_read.samples,
        ms,
    );
    if setup.shared_topic && setup.controllers > 1 {
        println!(
            "      read alone on the topic, {} controllers would take 2 × {} × median list read = {}; \
             these name themselves in their lists (doorip), so they are read together",
            setup.controllers,
            setup.controllers,
            ms(list_read.median * 2 * setup.controllers as u32)
        );
    }

    let remaining: Vec<usize> = devices.iter().map(|d| d.snapshot().users.len()).collect();
    if remaining.iter().any(|&users| users != RESIDENT_BADGES) {
        println!("    WARNING: controllers hold {remaining:?} badges, {RESIDENT_BADGES} expected");
    }
    drop(devices);
    mqtt.stop().await;
    service.stop().await;
    site
}

/// List reads and their samples.
struct ListReads {
    median: Duration,
    samples: Vec<Duration>,
}

async fn list_reads(store: &Store, mqtt: &Mqtt, address: &str) -> ListReads {
    let profile = store
        .profiles()
        .get("esprfid-v2")
        .expect("the esprfid-v2 profile")
        .clone();
    let mut driver = EspRfid::connect(&profile, mqtt.channel(), address)
        .await
        .expect("esp-rfid driver");
    for _ in 0..3 {
        driver.identify().await.expect("list read");
    }
    let mut samples = Vec::with_capacity(LIST_READS);
    for _ in 0..LIST_READS {
        let start = Instant::now();
        driver.identify().await.expect("list read");
        samples.push(start.elapsed());
    }
    ListReads {
        median: summarize(&samples).median,
        samples,
    }
}

async fn lose_one(store: &Store, api: &Api, rid: i64, key: i64, controllers: usize) -> LostRun {
    let wall = Utc::now();
    let start = Instant::now();
    api.declare_lost(rid, key).await;
    let api_time = start.elapsed();
    loop {
        let rows = {
            let mut tx = store.read().await.expect("read");
            tx.key_sync_of_key(rid, key).await.expect("key_sync rows")
        };
        let done = rows.len() == controllers
            && rows
                .iter()
                .all(|row| row.doors == 0 && row.state == SyncState::Confirmed);
        if done {
            let total = start.elapsed();
            let offsets: Vec<Duration> = rows
                .iter()
                .filter_map(|row| row.confirmed_at)
                .map(|at| (at - wall).to_std().unwrap_or_default())
                .collect();
            return LostRun {
                total,
                api: api_time,
                first: offsets.iter().copied().min().unwrap_or_default(),
                last: offsets.iter().copied().max().unwrap_or_default(),
                traffic: Traffic::default(),
            };
        }
        if let Some(row) = rows.iter().find(|row| row.state == SyncState::Failed) {
            panic!("removal failed: {row:?}");
        }
        if start.elapsed() > Duration::from_secs(120) {
            panic!("key {key} not confirmed on all controllers after 120 s: {rows:?}");
        }
        tokio::time::sleep(POLL).await;
    }
}

// ---------------------------------------------------------------------------------
// 2. Sustained ingestion of wmbusmeters telegrams
// ---------------------------------------------------------------------------------

/// Counts rows on a read-only connection of its own, beside the service's pool.
struct Counter {
    pool: SqlitePool,
    rid: i64,
}

impl Counter {
    async fn open(path: &Path, rid: i64) -> Counter {
        let options = SqliteConnectOptions::new().filename(path).read_only(true);
        let pool = SqlitePoolOptions::new()
            .max_connections(1)
            .connect_with(options)
            .await
            .expect("read-only connection");
        Counter { pool, rid }
    }

    async fn count(&self, table: &str) -> i64 {
        sqlx::query_scalar::<_, i64>(&format!(
            "SELECT COUNT(*) FROM {table} WHERE residence_id = $1"
        ))
        .bind(self.rid)
        .fetch_one(&self.pool)
        .await
        .expect("count rows")
    }

    async fn readings(&self) -> i64 {
        self.count("meter_readings").await
    }
}

/// The counters of gardien's inbox, read at one moment.
#[derive(Debug, Default, Clone, Copy)]
struct Inbox {
    handled: u64,
    stored: u64,
    duplicate: u64,
    rejected: u64,
    unknown: u64,
}

impl Inbox {
    fn of(stats: &InboxStats) -> Inbox {
        Inbox {
            handled: stats.handled.load(Ordering::Relaxed),
            stored: stats.telegrams_stored.load(Ordering::Relaxed),
            duplicate: stats.telegrams_duplicate.load(Ordering::Relaxed),
            rejected: stats.telegrams_rejected.load(Ordering::Relaxed),
            unknown: stats.telegrams_unknown_meter.load(Ordering::Relaxed),
        }
    }

    fn since(self, before: Inbox) -> Inbox {
        Inbox {
            handled: self.handled - before.handled,
            stored: self.stored - before.stored,
            duplicate: self.duplicate - before.duplicate,
            rejected: self.rejected - before.rejected,
            unknown: self.unknown - before.unknown,
        }
    }
}

/// A publisher of `meters` on a frozen clock at `t0`, under `prefix`.
fn publisher(
    broker: SocketAddr,
    id: &str,
    prefix: &str,
    meters: &[BusMeter],
    t0: i64,
) -> WmbusPublisher {
    let mut options = MqttOptions::new(id, broker.ip().to_string(), broker.port());
    options.set_keep_alive(Duration::from_secs(5));
    let config = WmbusConfig {
        prefix: prefix.into(),
        interval_seconds: ROUND_SECONDS,
        seed: 3,
        ..WmbusConfig::default()
    };
    WmbusPublisher::new(
        config,
        meters.iter().cloned(),
        SimClock::frozen(t0),
        options,
    )
    .expect("wmbus publisher")
}

/// Times of one publishing run, from just before the first telegram.
struct Published {
    /// Every `publish_round` returned (all handed to the MQTT client).
    handed: Duration,
    /// The broker acknowledged every publication.
    acked: Duration,
    sent: usize,
}

/// Publishes `rounds` rounds, the clock one round later each time; the physics is
/// brought to the first round's instant before the clock starts.
async fn publish_rounds(
    publisher: &WmbusPublisher,
    meters: &[BusMeter],
    rounds: usize,
) -> (Instant, Published) {
    let first = publisher.clock().now();
    for meter in meters {
        let _ = publisher.meter_value_at(meter.id, first);
    }
    // Let the publisher's connection come up before the clock starts.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let start = Instant::now();
    let mut sent = 0;
    for _ in 0..rounds {
        sent += publisher
            .publish_round()
            .await
            .expect("publish a round")
            .sent;
        publisher.clock().advance(ROUND_SECONDS);
    }
    let handed = start.elapsed();
    publisher
        .flush(Duration::from_secs(120))
        .await
        .expect("the broker acknowledges every telegram");
    let acked = start.elapsed();
    (
        start,
        Published {
            handed,
            acked,
            sent,
        },
    )
}

async fn wmbus_ingestion(broker: SocketAddr) {
    let wanted = env_count("MQTT_BENCH_TELEGRAMS", TELEGRAMS);
    let on_air = METERS.min(wanted);
    let rounds = wanted.div_ceil(on_air);
    let telegrams = rounds * on_air;
    section(&format!(
        "2. Sustained ingestion of wmbusmeters telegrams: {METERS} water meters, {telegrams} telegrams per run"
    ));

    // The meters: a generated building's water meters (cold and hot, 2 per flat),
    // installed two days before the first telegram; telegrams an hour apart, all in
    // the past, the clock going on from run to run.
    let hours = (rounds * (INGEST_RUNS + 1)) as i64 * ROUND_SECONDS;
    let now = Utc::now().timestamp();
    let t0 = (now - hours - DAY) / ROUND_SECONDS * ROUND_SECONDS;
    let installed = t0 - 2 * DAY;
    let installed_on: NaiveDate = DateTime::<Utc>::from_timestamp(installed, 0)
        .expect("an instant")
        .date_naive();
    let flats = METERS.div_ceil(2) as u32;
    let meters: Vec<BusMeter> = population(7, 30_000_001, flats, installed)
        .into_iter()
        .filter(|meter| meter.unit == Unit::CubicMetres)
        .take(METERS)
        .collect();

    let dir = tempfile::tempdir().expect("temporary directory");
    let path = dir.path().join("gardien.db");
    let store = Store::open(&path.display().to_string())
        .await
        .expect("open the database");
    let actor = Actor::system("bench");
    let start = Instant::now();
    let mut tx = store.write().await.expect("write");
    let residence = ResidenceInput {
        name: "Résidence des 2000 compteurs".into(),
        address: "1 rue du Banc d'Essai".into(),
    }
    .validated()
    .expect("valid residence");
    let rid = tx
        .insert_residence(&actor, &residence)
        .await
        .expect("residence")
        .id;
    let mut unit = 0;
    for (position, meter) in meters.iter().enumerate() {
        if position % 2 == 0 {
            let input = UnitInput {
                lot_number: format!("L{:05}", position / 2 + 1),
                kind: UnitKind::Flat,
                building_id: None,
                floor: None,
                area_m2: None,
            }
            .validated()
            .expect("valid unit");
            unit = tx.insert_unit(&actor, rid, &input).await.expect("unit").id;
        }
        let input = MeterInput {
            kind: kind_of(meter),
            unit_id: Some(unit),
            building_id: None,
            mbus_id: format!("{:08}", meter.id),
            manufacturer: meter.manufacturer.clone(),
            version: i64::from(meter.version),
            medium: i64::from(meter.medium),
            measure_unit: MeasureUnit::M3,
            digits: i64::from(meter.digits),
            installed_on,
            initial_index: meter.initial,
            gateway_id: None,
            label: String::new(),
        }
        .validated()
        .expect("valid meter");
        tx.insert_meter(&actor, rid, &input).await.expect("meter");
    }
    tx.commit().await.expect("commit");
    let seeded = start.elapsed();
    let counter = Counter::open(&path, rid).await;

    let mqtt = Mqtt::start(
        store.clone(),
        &mqtt_config(
            broker,
            "gardien-bench-wmbus",
            vec![WmbusSubscription {
                topic: "wmbusmeters/#".into(),
                residence_id: rid,
            }],
        ),
        "bench-wmbus",
    )
    .await
    .expect("gardien's MQTT connection");
    let stats = mqtt.stats();
    // The bridge state message is handled and ignored: it shows the subscription works.
    let probe = raw_client(broker, "bench-wmbus-probe", &[], QoS::AtLeastOnce, false).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        probe
            .client
            .publish(
                "wmbusmeters/bridge/state",
                QoS::AtLeastOnce,
                false,
                b"online".to_vec(),
            )
            .await
            .expect("probe");
        if wait_for(Duration::from_millis(200), || {
            stats.handled.load(Ordering::Relaxed) > 0
        })
        .await
        {
            break;
        }
        if Instant::now() > deadline {
            println!("  WARNING: gardien handled no message on wmbusmeters/# within 10 s");
            break;
        }
    }
    drop(probe);
    // Bridge states published while waiting for the first may still come in.
    tokio::time::sleep(Duration::from_millis(300)).await;

    let mut drivers: BTreeMap<&'static str, usize> = BTreeMap::new();
    for meter in &meters {
        let name = match meter.manufacturer.as_str() {
            "KAM" => "kamwater",
            "SEN" => "iperl",
            _ => "izar",
        };
        *drivers.entry(name).or_default() += 1;
    }
    println!(
        "  setup: {} water meters (population(), cold and hot) written through the Store in {} ({} flats);",
        meters.len(),
        secs(seeded),
        meters.len().div_ceil(2)
    );
    println!(
        "         publisher gardien_simulators::wmbus::WmbusPublisher (QoS 1, rumqttc defaults: 100 in flight), drivers {drivers:?};"
    );
    println!(
        "         {rounds} rounds of one telegram per meter, virtual clock +{ROUND_SECONDS} s per round (frozen, in the past);"
    );
    println!(
        "         gardien: MqttConfig {{ wmbus: [\"wmbusmeters/#\"] }}, clean_session false, manual acks after storing, inbox"
    );
    println!(
        "         batches of up to 256 telegrams per transaction; broker: at most 500 unacknowledged messages per client."
    );
    println!(
        "  method: clock started just before the first publish; end to end = the database's meter_readings count (own"
    );
    println!(
        "          read-only connection, every {} ms) has grown by the telegrams published.",
        COUNT_POLL.as_millis()
    );

    // Baseline: the same publisher and telegrams to a subscriber that only counts.
    let mut baseline_rates = Vec::new();
    let mut baseline_acked = Vec::new();
    for run in 0..BASELINE_RUNS {
        let sink = raw_client(
            broker,
            &format!("bench-wmbus-sink-{run}"),
            &["wmbusbaseline/#"],
            QoS::AtLeastOnce,
            false,
        )
        .await;
        let publisher = publisher(
            broker,
            &format!("bench-wmbus-baseline-{run}"),
            "wmbusbaseline",
            &meters[..on_air],
            t0,
        );
        let (start, published) = publish_rounds(&publisher, &meters[..on_air], rounds).await;
        let target = published.sent as u64;
        let all = wait_for(Duration::from_secs(300), || {
            sink.received.load(Ordering::Relaxed) >= target
        })
        .await;
        let received = start.elapsed();
        if !all {
            println!(
                "  WARNING: the counting subscriber got {} of {target}",
                sink.received.load(Ordering::Relaxed)
            );
        }
        baseline_rates.push(target as f64 / received.as_secs_f64());
        baseline_acked.push(published.acked);
    }

    // Runs with new telegrams, stored.
    let mut rates = Vec::new();
    let mut published_times = Vec::new();
    let mut acked_times = Vec::new();
    let mut stored_times = Vec::new();
    let mut totals = Inbox::default();
    let fresh = publisher(
        broker,
        "bench-wmbusmeters",
        "wmbusmeters",
        &meters[..on_air],
        t0,
    );
    for _ in 0..INGEST_RUNS {
        let readings_before = counter.readings().await;
        let inbox_before = Inbox::of(&stats);
        let (start, published) = publish_rounds(&fresh, &meters[..on_air], rounds).await;
        let target = readings_before + published.sent as i64;
        let deadline = Instant::now() + Duration::from_secs(600);
        let mut readings = counter.readings().await;
        while readings < target {
            let handled = Inbox::of(&stats).since(inbox_before).handled;
            if handled >= published.sent as u64 || Instant::now() > deadline {
                // Everything handled and still short: some telegrams were not stored.
                readings = counter.readings().await;
                break;
            }
            tokio::time::sleep(COUNT_POLL).await;
            readings = counter.readings().await;
        }
        let stored = start.elapsed();
        let inbox = Inbox::of(&stats).since(inbox_before);
        totals = Inbox {
            handled: totals.handled + inbox.handled,
            stored: totals.stored + inbox.stored,
            duplicate: totals.duplicate + inbox.duplicate,
            rejected: totals.rejected + inbox.rejected,
            unknown: totals.unknown + inbox.unknown,
        };
        if readings < target {
            println!(
                "  WARNING: {} of {} readings stored; inbox {inbox:?}",
                readings - readings_before,
                published.sent
            );
        }
        rates.push(published.sent as f64 / stored.as_secs_f64());
        published_times.push(published.handed);
        acked_times.push(published.acked);
        stored_times.push(stored);
    }
    drop(fresh);

    // The first run's telegrams again: a fresh publisher, same meters, seed and clock.
    let readings_before = counter.readings().await;
    let conflicts_before = counter.count("reading_conflicts").await;
    let inbox_before = Inbox::of(&stats);
    let again = publisher(
        broker,
        "bench-wmbusmeters-again",
        "wmbusmeters",
        &meters[..on_air],
        t0,
    );
    let (start, republished) = publish_rounds(&again, &meters[..on_air], rounds).await;
    let all = wait_for(Duration::from_secs(600), || {
        Inbox::of(&stats).since(inbox_before).handled >= republished.sent as u64
    })
    .await;
    let handled_time = start.elapsed();
    drop(again);
    let inbox = Inbox::of(&stats).since(inbox_before);
    let readings_after = counter.readings().await;
    let conflicts_after = counter.count("reading_conflicts").await;
    if !all {
        println!("  WARNING: the re-published telegrams were not all handled: {inbox:?}");
    }

    println!();
    let (median, min, max) = median_min_max(&baseline_rates);
    println!("  {:<58} {:>12} {:>12} {:>12}", "", "median", "min", "max");
    println!(
        "  {:<58} {:>12.0} {:>12.0} {:>12.0}  (n={})",
        "baseline: publisher → counting subscriber, messages/s",
        median,
        min,
        max,
        baseline_rates.len()
    );
    let acked = summarize(&baseline_acked);
    println!(
        "  {:<58} {:>12} {:>12} {:>12}",
        "  baseline: all acknowledged by the broker after",
        secs(acked.median),
        secs(acked.min),
        secs(acked.max)
    );
    let (median, min, max) = median_min_max(&rates);
    println!(
        "  {:<58} {:>12.0} {:>12.0} {:>12.0}  (n={})",
        "end to end: publish → stored in SQLite, messages/s",
        median,
        min,
        max,
        rates.len()
    );
    for (label, samples) in [
        (
            "  all handed to the publisher's client after",
            &published_times,
        ),
        ("  all acknowledged by the broker after", &acked_times),
        ("  all stored after", &stored_times),
    ] {
        let s = summarize(samples);
        println!(
            "  {:<58} {:>12} {:>12} {:>12}",
            label,
            secs(s.median),
            secs(s.min),
            secs(s.max)
        );
    }
    let baseline_median = median_min_max(&baseline_rates).0;
    if baseline_median > 0.0 {
        println!(
            "  {:<58} {:>11.0}%",
            "  end to end / baseline (medians)",
            100.0 * median_min_max(&rates).0 / baseline_median
        );
    }
    println!(
        "  inbox over the {INGEST_RUNS} runs: {} handled, {} stored, {} duplicates or conflicts, {} rejected, {} unknown meters",
        totals.handled, totals.stored, totals.duplicate, totals.rejected, totals.unknown
    );
    println!();
    println!(
        "  the first run's {} telegrams again (fresh publisher, same meters, seed and clock: all duplicates):",
        republished.sent
    );
    println!(
        "    handled in {} = {:.0} messages/s (broker acknowledged all after {})",
        secs(handled_time),
        republished.sent as f64 / handled_time.as_secs_f64(),
        secs(republished.acked)
    );
    let unchanged = readings_after == readings_before && conflicts_after == conflicts_before;
    println!(
        "    count check: meter_readings {readings_before} before, {readings_after} after; reading_conflicts {conflicts_before} → {conflicts_after};"
    );
    println!(
        "    inbox: {} duplicates, {} stored, {} rejected, {} unknown → {}",
        inbox.duplicate,
        inbox.stored,
        inbox.rejected,
        inbox.unknown,
        if unchanged && inbox.duplicate == republished.sent as u64 {
            "nothing stored twice"
        } else {
            "NOT ALL DUPLICATES (see the counts)"
        }
    );
    mqtt.stop().await;
    store.close().await;
    counter.pool.close().await;
}
