//! A simulated wmbusmeters set-up: radio meters heard by a dongle, each telegram
//! decoded and published as JSON on `wmbusmeters/<name>` with MQTT QoS 1, as the usual
//! `mosquitto_pub` shell hook does (`shared/devices/wmbusmeters-json.md`).
//!
//! The meters are the MBG-250's: an [`MBusLoop`] of [`BusMeter`]s consuming on a
//! [`SimClock`], with the same anomaly [`Scenario`]s and [`GroundTruth`]. A meter the
//! loop says does not answer (a `no_answer` scenario, a replaced meter, a switch
//! flipped) sends nothing. Status words come from the bits a test forces on a meter and
//! from the scenarios: a leak running → leak, an index that fell since the previous
//! telegram (`backwards`) → reverse flow; each driver prints them in its own words
//! ([`telegram`]).
//!
//! Faults, drawn per telegram from a seeded RNG ([`WmbusFaults`]):
//! - duplicate: the same telegram published twice, as a QoS 1 redelivery does;
//! - out of order: a telegram held back and published right after the meter's next
//!   one (or at the end of the next round if the meter is silent then);
//! - malformed: a broken message ([`Malformed`]) published after the telegram, on the
//!   same topic; the telegram itself still goes.
//!
//! [`WmbusPublisher::publish_round`] publishes one telegram per meter now (virtual
//! time); [`WmbusPublisher::spawn`] does it periodically.

pub mod telegram;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rumqttc::{AsyncClient, ConnectionError, Event, EventLoop, MqttOptions, Packet, QoS};
use serde_json::Value;
use tokio::sync::Notify;
use tokio::task::JoinHandle;

use crate::mbg::codes::{format_id, status, Unit};
use crate::mbg::profile::Usage;
use crate::mbg::{
    BusError, BusMeter, GroundTruth, MBusLoop, MeterValue, Scenario, ScenarioError, SimClock,
    TruthRecord,
};
use telegram::{billing_dates, History, Reading};
pub use telegram::{Driver, Malformed};

/// Largest packet the publisher sends (a [`Malformed::Huge`] message is ~100 KiB).
const MAX_OUTGOING_PACKET: usize = 1024 * 1024;

/// How often each fault happens, per telegram, 0 to 1.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct WmbusFaults {
    pub duplicate: f64,
    pub out_of_order: f64,
    pub malformed: f64,
    /// The broken messages to draw from; empty means all of [`Malformed::ALL`].
    pub malformed_kinds: Vec<Malformed>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct WmbusConfig {
    /// Topic prefix: telegrams go to `<prefix>/<name>`.
    pub prefix: String,
    /// Publish on `<prefix>/<id>` rather than `<prefix>/<name>`.
    pub topic_by_id: bool,
    /// Virtual seconds between two telegrams of a meter, when no earlier telegram
    /// says where the previous one was (a `backwards` drop within it is a reverse flow).
    pub interval_seconds: i64,
    pub faults: WmbusFaults,
    /// Seed of the fault draws.
    pub seed: u64,
}

impl Default for WmbusConfig {
    fn default() -> Self {
        WmbusConfig {
            prefix: "wmbusmeters".into(),
            topic_by_id: false,
            interval_seconds: 86_400,
            faults: WmbusFaults::default(),
            seed: 1,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum WmbusError {
    #[error("the wmbus publisher needs a Tokio runtime to run its MQTT connection")]
    NoRuntime,
    #[error(transparent)]
    Bus(#[from] BusError),
    #[error("the MQTT client stopped: {0}")]
    Client(#[from] rumqttc::ClientError),
    #[error("{acked} of {published} publications acknowledged by the broker within {seconds} s")]
    NotAcknowledged {
        published: u64,
        acked: u64,
        seconds: u64,
    },
}

/// What one round published.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Round {
    /// Every message published, whatever it was.
    pub sent: usize,
    /// Telegrams of this round published now (held ones excluded).
    pub telegrams: usize,
    /// Second copies of a telegram.
    pub duplicates: usize,
    /// Telegrams of this round held back for the next.
    pub held: usize,
    /// Telegrams of an earlier round published late, in this one.
    pub released: usize,
    pub malformed: usize,
    /// Meters that sent nothing (not answering).
    pub silent: usize,
}

/// A telegram waiting to be published late.
#[derive(Debug, Clone)]
struct Held {
    meter: u32,
    topic: String,
    payload: Vec<u8>,
}

#[derive(Debug)]
struct State {
    bus: MBusLoop,
    truth: GroundTruth,
    drivers: HashMap<u32, Driver>,
    names: HashMap<u32, String>,
    held: Vec<Held>,
    /// Virtual time of each meter's last telegram.
    last_sent: HashMap<u32, i64>,
    /// Indexes at billing dates, by meter and instant: asking the physics for a past
    /// instant walks its hourly cache back, so each is computed once.
    past: HashMap<(u32, i64), f64>,
    rng: StdRng,
}

impl State {
    /// The meter's index at a past instant (its start if earlier).
    fn index_then(&mut self, meter: &BusMeter, at: i64) -> f64 {
        let at = at.max(meter.start);
        if let Some(value) = self.past.get(&(meter.id, at)) {
            return *value;
        }
        let value = self.bus.index_at(meter.id, at).map_or(0.0, |v| v.value());
        self.past.insert((meter.id, at), value);
        value
    }
}

/// Counts publications and the broker's acknowledgements.
#[derive(Debug, Default)]
struct Acks {
    published: AtomicU64,
    acked: AtomicU64,
    changed: Notify,
}

/// The simulated publisher; clones share the meters, the faults and the connection.
#[derive(Debug, Clone)]
pub struct WmbusPublisher {
    config: Arc<WmbusConfig>,
    clock: SimClock,
    state: Arc<Mutex<State>>,
    client: AsyncClient,
    acks: Arc<Acks>,
}

impl WmbusPublisher {
    /// Puts `meters` on the air and connects to the broker `options` names (the
    /// connection is made in the background, on the current Tokio runtime, and kept
    /// up).
    pub fn new(
        config: WmbusConfig,
        meters: impl IntoIterator<Item = BusMeter>,
        clock: SimClock,
        mut options: MqttOptions,
    ) -> Result<WmbusPublisher, WmbusError> {
        let mut bus = MBusLoop::new();
        for meter in meters {
            bus.add(meter)?;
        }
        // rumqttc refuses to send packets over 10 KiB by default; a huge message is
        // one of the faults.
        let incoming = options.max_packet_size();
        options.set_max_packet_size(incoming, MAX_OUTGOING_PACKET);
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| WmbusError::NoRuntime)?;
        let (client, event_loop) = AsyncClient::new(options, 1024);
        let acks = Arc::new(Acks::default());
        runtime.spawn(drive(event_loop, acks.clone()));
        Ok(WmbusPublisher {
            state: Arc::new(Mutex::new(State {
                bus,
                truth: GroundTruth::new(),
                drivers: HashMap::new(),
                names: HashMap::new(),
                held: Vec::new(),
                last_sent: HashMap::new(),
                past: HashMap::new(),
                rng: StdRng::seed_from_u64(config.seed),
            })),
            config: Arc::new(config),
            clock,
            client,
            acks,
        })
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn clock(&self) -> &SimClock {
        &self.clock
    }

    /// Applies an anomaly scenario; the record goes to the ground truth.
    pub fn apply(&self, scenario: &Scenario) -> Result<TruthRecord, ScenarioError> {
        let mut state = self.lock();
        let record = state.bus.apply(scenario)?;
        // The physics changed, its past too.
        state.past.clear();
        state.truth.push(record.clone());
        Ok(record)
    }

    pub fn ground_truth(&self) -> GroundTruth {
        self.lock().truth.clone()
    }

    /// Status bits the meter reports from now on (see [`status`]).
    pub fn force_status(&self, id: u32, bits: u16) -> Result<(), BusError> {
        self.lock().bus.force_status(id, bits)
    }

    /// Off, the meter sends nothing.
    pub fn set_answering(&self, id: u32, answering: bool) -> Result<(), BusError> {
        self.lock().bus.set_answering(id, answering)
    }

    /// Decodes the meter with another driver than [`Driver::for_meter`] picks.
    pub fn set_driver(&self, id: u32, driver: Driver) {
        self.lock().drivers.insert(id, driver);
    }

    pub fn set_name(&self, id: u32, name: &str) {
        self.lock().names.insert(id, name.to_owned());
    }

    /// Every meter ever on the air, replaced ones included.
    pub fn meters(&self) -> Vec<BusMeter> {
        self.lock().bus.meters().cloned().collect()
    }

    pub fn driver(&self, id: u32) -> Option<Driver> {
        let state = self.lock();
        state.bus.meter(id).map(|meter| driver_of(&state, meter))
    }

    /// The topic the meter publishes on.
    pub fn topic(&self, id: u32) -> Option<String> {
        let state = self.lock();
        let meter = state.bus.meter(id)?;
        Some(self.topic_of(&state, meter))
    }

    /// The meter's index at `unix` (virtual time), answering or not.
    pub fn meter_value_at(&self, id: u32, unix: i64) -> Option<MeterValue> {
        self.lock().bus.index_at(id, unix)
    }

    /// Publishes one telegram per answering meter, at the virtual time now, with the
    /// faults drawn; returns once every message is handed to the MQTT client (see
    /// [`WmbusPublisher::flush`] for the broker's acknowledgements).
    pub async fn publish_round(&self) -> Result<Round, WmbusError> {
        let (messages, round) = self.prepare_round(self.clock.now());
        for (topic, payload) in messages {
            self.acks.published.fetch_add(1, Ordering::SeqCst);
            self.client
                .publish(topic, QoS::AtLeastOnce, false, payload)
                .await?;
        }
        Ok(round)
    }

    /// Waits until the broker has acknowledged every publication, at most `patience`.
    pub async fn flush(&self, patience: Duration) -> Result<(), WmbusError> {
        let deadline = tokio::time::Instant::now() + patience;
        loop {
            let changed = self.acks.changed.notified();
            tokio::pin!(changed);
            // Registered before the counters are read, so no acknowledgement is missed.
            changed.as_mut().enable();
            let published = self.acks.published.load(Ordering::SeqCst);
            let acked = self.acks.acked.load(Ordering::SeqCst);
            if acked >= published {
                return Ok(());
            }
            if tokio::time::timeout_at(deadline, changed).await.is_err() {
                return Err(WmbusError::NotAcknowledged {
                    published,
                    acked,
                    seconds: patience.as_secs(),
                });
            }
        }
    }

    /// Publishes a round every `every` (real time) until the task is aborted.
    pub fn spawn(&self, every: Duration) -> JoinHandle<()> {
        let publisher = self.clone();
        tokio::spawn(async move {
            let mut ticks = tokio::time::interval(every);
            loop {
                ticks.tick().await;
                match publisher.publish_round().await {
                    Ok(round) => tracing::debug!(?round, "wmbus round published"),
                    Err(error) => {
                        tracing::warn!(%error, "wmbus publisher stopped");
                        return;
                    }
                }
            }
        })
    }

    fn topic_of(&self, state: &State, meter: &BusMeter) -> String {
        let last = if self.config.topic_by_id {
            format_id(meter.id)
        } else {
            name_of(state, meter)
        };
        format!("{}/{last}", self.config.prefix)
    }

    /// The messages of a round at virtual time `t`, built under the lock (publishing
    /// happens after, without it).
    fn prepare_round(&self, t: i64) -> (Vec<(String, Vec<u8>)>, Round) {
        let faults = &self.config.faults;
        let mut state = self.lock();
        let mut round = Round::default();
        let mut out: Vec<(String, Vec<u8>)> = Vec::new();
        let mut late = std::mem::take(&mut state.held);
        let ids: Vec<u32> = state.bus.meters().map(|m| m.id).collect();
        for id in ids {
            let Some((topic, good, index_field)) = self.telegram(&mut state, id, t) else {
                round.silent += 1;
                continue;
            };
            let payload = Value::Object(good.clone()).to_string().into_bytes();
            let already_held = late.iter().any(|h| h.meter == id);
            if !already_held && draw(&mut state.rng, faults.out_of_order) {
                state.held.push(Held {
                    meter: id,
                    topic,
                    payload,
                });
                round.held += 1;
                continue;
            }
            out.push((topic.clone(), payload.clone()));
            round.telegrams += 1;
            if draw(&mut state.rng, faults.duplicate) {
                out.push((topic.clone(), payload));
                round.duplicates += 1;
            }
            if let Some(position) = late.iter().position(|h| h.meter == id) {
                let held = late.remove(position);
                out.push((held.topic, held.payload));
                round.released += 1;
            }
            if draw(&mut state.rng, faults.malformed) {
                let kinds = if faults.malformed_kinds.is_empty() {
                    &Malformed::ALL[..]
                } else {
                    &faults.malformed_kinds[..]
                };
                let how = kinds[state.rng.gen_range(0..kinds.len())];
                out.push((topic, telegram::malformed(&good, index_field, how)));
                round.malformed += 1;
            }
        }
        // Telegrams held for meters silent this round still go, late.
        for held in late {
            out.push((held.topic, held.payload));
            round.released += 1;
        }
        round.sent = out.len();
        (out, round)
    }

    /// Meter `id`'s telegram at `t`, with its topic and index field; `None` if it does
    /// not answer.
    fn telegram(
        &self,
        state: &mut State,
        id: u32,
        t: i64,
    ) -> Option<(String, serde_json::Map<String, Value>, &'static str)> {
        let meter = state.bus.meter(id)?.clone();
        let driver = driver_of(state, &meter);
        // Values at billing dates first: the physics cache then only moves forward to t.
        let (month_start, year_end) = billing_dates(t);
        let (month, year) = match driver {
            Driver::Kamwater | Driver::Izar => (true, false),
            Driver::Fhkvdataiii => (false, true),
            Driver::Iperl | Driver::Kamheat => (false, false),
        };
        let history = History {
            month_start: if month {
                state.index_then(&meter, month_start)
            } else {
                0.0
            },
            year_end: if year {
                state.index_then(&meter, year_end)
            } else {
                0.0
            },
        };
        let reading = state.bus.read(id, t)?;
        let previous = state
            .last_sent
            .insert(id, t)
            .unwrap_or(t - self.config.interval_seconds);
        let bits = reading.status | scenario_bits(&state.truth, &meter, previous, t);
        let reading = Reading {
            at: t,
            index: reading.value.value(),
            bits,
        };
        let name = name_of(state, &meter);
        let topic = self.topic_of(state, &meter);
        let json = telegram::telegram(&meter, driver, &name, &reading, &history);
        Some((topic, json, driver.index_field()))
    }
}

fn driver_of(state: &State, meter: &BusMeter) -> Driver {
    state
        .drivers
        .get(&meter.id)
        .copied()
        .unwrap_or_else(|| Driver::for_meter(meter))
}

/// The configured name, or one made of what the meter measures and its id
/// (`Cold10000001`), as people name meters in wmbusmeters.
fn name_of(state: &State, meter: &BusMeter) -> String {
    if let Some(name) = state.names.get(&meter.id) {
        return name.clone();
    }
    let what = match (meter.unit, meter.profile.usage) {
        (Unit::Hca, _) => "Hca",
        (Unit::KilowattHours | Unit::MegawattHours, _) => "Heat",
        (_, Usage::HotWater) => "Hot",
        _ => "Cold",
    };
    format!("{what}{}", format_id(meter.id))
}

/// Status bits the scenarios put on the meter's telegram at `t`, the previous one
/// having been at `previous`: a leak running, a drop of the index since.
fn scenario_bits(truth: &GroundTruth, meter: &BusMeter, previous: i64, t: i64) -> u16 {
    let id = format_id(meter.id);
    truth
        .scenarios
        .iter()
        .filter(|record| record.meter_id == id)
        .map(|record| match record.kind.as_str() {
            "leak" if record.start_unix <= t && record.end_unix.is_none_or(|end| t < end) => {
                status::LEAK
            }
            "backwards" if previous < record.start_unix && record.start_unix <= t => {
                status::REVERSE_FLOW
            }
            _ => 0,
        })
        .fold(0, |bits, bit| bits | bit)
}

fn draw(rng: &mut StdRng, rate: f64) -> bool {
    rate > 0.0 && rng.gen::<f64>() < rate
}

/// Polls the connection for as long as a client handle lives: counts the broker's
/// acknowledgements, logs and backs off on errors (rumqttc reconnects on the next poll).
async fn drive(mut event_loop: EventLoop, acks: Arc<Acks>) {
    loop {
        match event_loop.poll().await {
            Ok(Event::Incoming(Packet::PubAck(_))) => {
                acks.acked.fetch_add(1, Ordering::SeqCst);
                acks.changed.notify_waiters();
            }
            Ok(_) => {}
            Err(ConnectionError::RequestsDone) => return,
            Err(error) => {
                tracing::warn!(%error, "wmbus publisher: MQTT connection lost, retrying");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
}
