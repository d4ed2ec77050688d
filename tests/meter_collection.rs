//! Meter collection end to end: simulated MBG-250 gateways of both firmware lines on
//! loopback sockets, a real SQLite file, the service's collection and programming
//! engine. The meters in the database are the meters on the simulated buses; the
//! simulators' virtual clock stands still in the past (January 2026) and moves night
//! by night, so every reading carries a known gateway time and a known index.

mod common;

use std::time::{Duration, Instant};

use chrono::{DateTime, NaiveDate, Utc};
use gardien::demo::meters::{kind_of, unit_of};
use gardien::domain::consumption::{consumption, Period};
use gardien::domain::{SyncState, Transport, UnitKind};
use gardien::metering::collect::{collect, CollectOptions};
use gardien::metering::usage::meter_history;
use gardien::storage::audit::Actor;
use gardien::storage::gateways::GatewayInput;
use gardien::storage::meters::{Meter, MeterInput, ReplacementInput};
use gardien::storage::readings::{
    AlarmKind, CollectionGateway, CollectionRun, MeterAlarm, Reading, ReadingSource,
};
use gardien::storage::residences::ResidenceInput;
use gardien::storage::units::UnitInput;
use gardien::storage::Store;
use gardien_simulators::mbg::population;
use gardien_simulators::{
    BusMeter, Faults, MbgConfig, MbgDevice, Scenario, ScenarioKind, SimClock, TcpServer,
};
use serde_json::Value;

/// 2026-01-10T02:00:00Z: the first night's read-out (virtual time, frozen).
const T0: i64 = 1_768_010_400;
/// 2026-01-01T00:00:00 in Paris (23:00 UTC the day before): the meters' installation,
/// where the simulated meters' initial indexes hold and the database's start.
const INSTALLED: i64 = 1_767_222_000;
const DAY: i64 = 86_400;

fn installed_on() -> NaiveDate {
    NaiveDate::from_ymd_opt(2026, 1, 1).expect("a date")
}

fn utc(unix: i64) -> DateTime<Utc> {
    DateTime::from_timestamp(unix, 0).expect("an instant")
}

fn actor() -> Actor {
    Actor::system("test")
}

fn options(gateway_timeout: Duration) -> CollectOptions {
    CollectOptions {
        concurrency: 8,
        gateway_timeout,
        owner: "collection-test".into(),
    }
}

/// A meter as both sides know it.
#[derive(Debug, Clone)]
struct Placed {
    db: Meter,
    bus: BusMeter,
}

/// A gateway as both sides know it. `device` is `None` for an address nobody answers.
struct Gw {
    id: i64,
    device: Option<MbgDevice>,
    _server: Option<TcpServer>,
    meters: Vec<Placed>,
}

impl Gw {
    fn device(&self) -> &MbgDevice {
        self.device.as_ref().expect("a simulated gateway")
    }

    fn major(&self) -> u8 {
        self.device().with(|mbg, _| mbg.firmware_major())
    }
}

/// A residence in a fresh SQLite file, with gateways sharing one virtual clock.
struct Site {
    _dir: tempfile::TempDir,
    store: Store,
    rid: i64,
    clock: SimClock,
    gateways: Vec<Gw>,
    flats: u32,
}

impl Site {
    async fn new(name: &str) -> Site {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("gardien.db");
        let store = Store::open(&path.display().to_string())
            .await
            .expect("open the store");
        let mut tx = store.write().await.expect("tx");
        let residence = ResidenceInput {
            name: name.into(),
            address: "3 rue des Compteurs".into(),
        }
        .validated()
        .expect("valid residence");
        let rid = tx
            .insert_residence(&actor(), &residence)
            .await
            .expect("residence")
            .id;
        tx.commit().await.expect("commit");
        Site {
            _dir: dir,
            store,
            rid,
            clock: SimClock::frozen(T0),
            gateways: Vec::new(),
            flats: 0,
        }
    }

    /// A simulated gateway of `firmware` (0x0104 or 0x0201) with `flats` flats of a
    /// generated building on its bus (ids from `first_id`), served on loopback; the
    /// database gets the gateway, one flat per three meters, and the meters. `prepare`
    /// runs on the device before the database copies the meters (to apply scenarios).
    async fn gateway_with(
        &mut self,
        firmware: u16,
        ms_per_meter: u64,
        flats: u32,
        first_id: u32,
        seed: u64,
        prepare: impl FnOnce(&MbgDevice, &[BusMeter]),
    ) -> usize {
        let device = MbgDevice::new(
            MbgConfig {
                firmware,
                ms_per_meter: Duration::from_millis(ms_per_meter),
                clock: self.clock.clone(),
                name: Some(format!("gateway-{first_id}")),
                ..MbgConfig::default()
            },
            Faults::seeded(seed),
        );
        let bus = population(seed, first_id, flats, INSTALLED);
        device
            .add_meters(bus.iter().cloned())
            .expect("meters on the bus");
        prepare(&device, &bus);
        let server = gardien_simulators::serve_tcp(device.clone(), "127.0.0.1:0")
            .await
            .expect("serve the gateway");
        let address = server.local_addr().to_string();
        let (id, meters) = self.record(&address, &bus, Some(&device)).await;
        self.gateways.push(Gw {
            id,
            device: Some(device),
            _server: Some(server),
            meters,
        });
        self.gateways.len() - 1
    }

    async fn gateway(&mut self, firmware: u16, flats: u32, first_id: u32, seed: u64) -> usize {
        self.gateway_with(firmware, 1, flats, first_id, seed, |_, _| {})
            .await
    }

    /// A gateway record at `address`, where nothing answers, with meters of its own.
    async fn dead_gateway(&mut self, address: &str, first_id: u32) -> usize {
        let bus = population(99, first_id, 1, INSTALLED);
        let (id, meters) = self.record(address, &bus, None).await;
        self.gateways.push(Gw {
            id,
            device: None,
            _server: None,
            meters,
        });
        self.gateways.len() - 1
    }

    /// Writes the gateway and its meters (and their flats) to the database.
    async fn record(
        &mut self,
        address: &str,
        bus: &[BusMeter],
        device: Option<&MbgDevice>,
    ) -> (i64, Vec<Placed>) {
        let mut tx = self.store.write().await.expect("tx");
        let input = GatewayInput {
            name: format!("Passerelle {}", self.gateways.len() + 1),
            model: "MBG-250".into(),
            transport: Transport::ModbusTcp,
            address: address.into(),
            modbus_unit: Some(1),
            building_id: None,
            notes: String::new(),
        }
        .validated()
        .expect("valid gateway");
        let gateway = tx
            .insert_gateway(&actor(), self.rid, &input)
            .await
            .expect("gateway")
            .id;
        let mut placed = Vec::new();
        let mut unit = 0;
        for (index, meter) in bus.iter().enumerate() {
            if index % 3 == 0 {
                self.flats += 1;
                let input = UnitInput {
                    lot_number: format!("L{:03}", self.flats),
                    kind: UnitKind::Flat,
                    building_id: None,
                    floor: None,
                    area_m2: None,
                }
                .validated()
                .expect("valid unit");
                unit = tx
                    .insert_unit(&actor(), self.rid, &input)
                    .await
                    .expect("unit")
                    .id;
            }
            // The index at installation, as the meter shows it (a scenario may have
            // moved it since the population was drawn).
            let initial = device
                .and_then(|d| d.meter_value_at(meter.id, INSTALLED))
                .map_or(meter.initial, |v| v.value());
            let input = MeterInput {
                kind: kind_of(meter),
                unit_id: Some(unit),
                building_id: None,
                mbus_id: format!("{:08}", meter.id),
                manufacturer: meter.manufacturer.clone(),
                version: i64::from(meter.version),
                medium: i64::from(meter.medium),
                measure_unit: unit_of(meter),
                digits: i64::from(meter.digits),
                installed_on: installed_on(),
                initial_index: initial,
                gateway_id: Some(gateway),
                label: String::new(),
            }
            .validated()
            .expect("valid meter");
            let db = tx
                .insert_meter(&actor(), self.rid, &input)
                .await
                .expect("meter");
            placed.push(Placed {
                db,
                bus: meter.clone(),
            });
        }
        tx.commit().await.expect("commit");
        (gateway, placed)
    }

    async fn collect(&self, gateway_timeout: Duration) -> CollectionRun {
        collect(&self.store, None, &options(gateway_timeout), |_, _| {})
            .await
            .expect("collection runs")
            .expect("a manual run always opens")
    }

    /// The run's parts, in gateway order.
    async fn parts(&self, run: &CollectionRun) -> Vec<CollectionGateway> {
        let mut parts = self
            .store
            .read()
            .await
            .expect("tx")
            .collection_parts(self.rid, Some(run.id), 100)
            .await
            .expect("parts");
        parts.sort_by_key(|p| p.gateway_id);
        parts
    }

    async fn part(&self, run: &CollectionRun, gateway: usize) -> CollectionGateway {
        let id = self.gateways[gateway].id;
        self.parts(run)
            .await
            .into_iter()
            .find(|p| p.gateway_id == id)
            .unwrap_or_else(|| panic!("no part for gateway {id} in run {}", run.id))
    }

    async fn readings(&self, meter_id: i64) -> Vec<Reading> {
        self.store
            .read()
            .await
            .expect("tx")
            .readings_between(&[meter_id], None, None)
            .await
            .expect("readings")
    }

    async fn alarms(&self, meter_id: i64, all: bool) -> Vec<MeterAlarm> {
        self.store
            .read()
            .await
            .expect("tx")
            .meter_alarms(self.rid, Some(meter_id), all)
            .await
            .expect("alarms")
    }

    async fn meter(&self, id: i64) -> Meter {
        self.store
            .read()
            .await
            .expect("tx")
            .meter(self.rid, id, gardien::domain::roles::Visibility::Everything)
            .await
            .expect("meter")
    }

    /// Moves every gateway's virtual clock on by `seconds`.
    fn advance(&self, seconds: i64) {
        self.clock.advance(seconds);
    }
}

/// Asserts the stored value is the meter's index at `t`: to f64 rounding on
/// firmware 2.x, to float32 precision on 1.x (the gateway sends a float32).
fn assert_index(value: f64, device: &MbgDevice, meter: &BusMeter, t: i64, major: u8) {
    let truth = device
        .meter_value_at(meter.id, t)
        .expect("meter on the bus")
        .value();
    let tolerance = if major == 1 {
        truth.abs() * 6e-8 + 1e-9
    } else {
        truth.abs() * 1e-12 + 1e-12
    };
    assert!(
        (value - truth).abs() <= tolerance,
        "meter {} (firmware {major}.x) at {t}: stored {value}, bus shows {truth}",
        meter.id
    );
}

fn problems(part: &CollectionGateway) -> Vec<Value> {
    serde_json::from_str::<Vec<Value>>(&part.problems).expect("problems are a JSON list")
}

/// The problems about meters (not the gateway's clock).
fn meter_problems(part: &CollectionGateway) -> Vec<Value> {
    problems(part)
        .into_iter()
        .filter(|p| !p["meter_id"].is_null())
        .collect()
}

fn open_kinds(alarms: &[MeterAlarm]) -> Vec<AlarmKind> {
    alarms
        .iter()
        .filter(|a| a.cleared_at.is_none())
        .map(|a| a.kind)
        .collect()
}

// ---------------------------------------------------------------------------------
// 1. Collection from both firmware lines
// ---------------------------------------------------------------------------------

#[tokio::test]
async fn collection_from_both_firmware_lines_into_the_database() {
    let mut site = Site::new("Les Deux Lignes").await;
    let fw1 = site.gateway(0x0104, 4, 10_000_001, 21).await;
    let fw2 = site.gateway(0x0201, 4, 20_000_001, 22).await;

    // Nothing programmed yet: every meter waits in the outbox.
    for gw in &site.gateways {
        let rows = site
            .store
            .read()
            .await
            .expect("tx")
            .meter_sync_of_gateway(gw.id)
            .await
            .expect("outbox");
        assert_eq!(rows.len(), 12);
        assert!(rows
            .iter()
            .all(|r| r.active && r.state == SyncState::Pending));
        assert_eq!(gw.device().snapshot().configured, 0);
    }

    let run = site.collect(Duration::from_secs(30)).await;
    assert_eq!(
        (run.trigger.as_str(), run.gateways, run.gateways_failed),
        ("manual", 2, 0)
    );
    assert_eq!(
        (
            run.meters_expected,
            run.meters_read,
            run.meters_missing,
            run.errors
        ),
        (24, 24, 0, 0)
    );
    assert!(run.finished_at.is_some());

    for index in [fw1, fw2] {
        let gw = &site.gateways[index];
        let major = gw.major();
        let device = gw.device();

        // The collection programmed the list: each meter once, nothing else.
        let snapshot = device.snapshot();
        assert_eq!(snapshot.configured, 12);
        let mut held: Vec<u32> = snapshot.slots.iter().map(|(_, s)| s.id).collect();
        held.sort_unstable();
        let mut ours: Vec<u32> = gw.meters.iter().map(|m| m.bus.id).collect();
        ours.sort_unstable();
        assert_eq!(held, ours, "firmware {major}.x");
        let (rows, slots, status) = {
            let mut tx = site.store.read().await.expect("tx");
            (
                tx.meter_sync_of_gateway(gw.id).await.expect("outbox"),
                tx.gateway_slots(gw.id).await.expect("slots"),
                tx.gateway_status(gw.id).await.expect("status"),
            )
        };
        assert!(rows.iter().all(|r| r.state == SyncState::Confirmed));
        assert_eq!(slots.len(), 12);
        assert_eq!(
            status.profile_id.as_deref(),
            Some(format!("mbg250-fw{major}").as_str())
        );
        assert!(status.verified_at.is_some());

        // One reading per meter, at the gateway's time, with the bus meter's index.
        for placed in &gw.meters {
            let readings = site.readings(placed.db.id).await;
            assert_eq!(readings.len(), 1, "meter {}", placed.db.mbus_id);
            let reading = &readings[0];
            assert_eq!(reading.read_at, utc(T0));
            assert_eq!(reading.source, ReadingSource::Modbus);
            let slot = slots
                .iter()
                .find(|s| s.mbus_id == placed.db.mbus_id)
                .expect("in the list")
                .slot;
            assert_eq!(reading.source_ref, format!("gateway:{}/slot:{slot}", gw.id));
            assert_index(reading.value, device, &placed.bus, T0, major);
            assert!(site.alarms(placed.db.id, true).await.is_empty());
        }

        // The part says what was done and with how many requests: connect 1; list
        // read 16 (250 slots × 8 registers, 125 per read); 12 slot writes; read back
        // 1 + 16; status 1, trigger 1, one look when the read-out is done 1; 12
        // readings, 8 per request, 2.
        let part = site.part(&run, index).await;
        assert_eq!(
            (part.meters_expected, part.meters_read, part.meters_missing),
            (12, 12, 0)
        );
        assert_eq!(
            (
                part.readings_new,
                part.readings_duplicate,
                part.conflicts,
                part.rejected
            ),
            (12, 0, 0, 0)
        );
        assert_eq!(part.requests, 51, "firmware {major}.x");
        assert_eq!(part.error, None);
        assert!(part.finished_at.is_some());
        // The gateway clock stands in January: the run says readings carry its time.
        let said = problems(&part);
        assert_eq!(said.len(), 1, "{said:?}");
        assert!(said[0]["problem"]
            .as_str()
            .is_some_and(|p| p.contains("horloge")));
    }
}

// ---------------------------------------------------------------------------------
// 2. Programming by the engine, reprogramming after a replacement, stale slot
// ---------------------------------------------------------------------------------

#[tokio::test]
async fn a_replacement_reprograms_one_slot_and_a_stale_slot_stores_nothing() {
    let mut site = Site::new("Le Remplacement").await;
    let g = site.gateway(0x0201, 2, 30_000_001, 31).await;
    let gateway_id = site.gateways[g].id;

    // The engine programs the list from the outbox.
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let engine = tokio::spawn(
        gardien::sync::Engine::new(site.store.clone(), common::test_sync_config()).run(async {
            let _ = stopped.await;
        }),
    );
    let store = site.store.clone();
    common::eventually_async(
        20,
        "the engine confirms every meter of the gateway",
        || {
            let store = store.clone();
            async move {
                let rows = store
                    .read()
                    .await
                    .expect("tx")
                    .meter_sync_of_gateway(gateway_id)
                    .await
                    .expect("outbox");
                rows.iter()
                    .map(|r| (r.meter_id, r.state))
                    .collect::<Vec<_>>()
            }
        },
        |rows| rows.len() == 6 && rows.iter().all(|(_, s)| *s == SyncState::Confirmed),
    )
    .await;
    let _ = stop.send(());
    engine.await.expect("engine stops");
    let device = site.gateways[g].device().clone();
    assert_eq!(device.snapshot().configured, 6);

    // Night 1: everything read.
    let run = site.collect(Duration::from_secs(30)).await;
    assert_eq!((run.meters_read, run.meters_missing), (6, 0));

    // During the day the cold water meter of the first flat is swapped on the bus.
    let old = site.gateways[g].meters[0].clone();
    let before = device.snapshot().slots;
    let slot = before
        .iter()
        .find(|(_, s)| s.id == old.bus.id)
        .map(|(slot, _)| *slot)
        .expect("the old meter's slot");
    site.advance(8 * 3600);
    let new_bus = BusMeter {
        id: 30_000_901,
        manufacturer: "SEN".into(),
        initial: 0.004,
        ..old.bus.clone()
    };
    let final_index = device
        .swap_meter(old.bus.id, new_bus.clone())
        .expect("swap on the bus")
        .value();
    let new = {
        let mut tx = site.store.write().await.expect("tx");
        let (new, replacement) = tx
            .replace_meter(
                &actor(),
                site.rid,
                old.db.id,
                &ReplacementInput {
                    replaced_on: NaiveDate::from_ymd_opt(2026, 1, 10).expect("date"),
                    final_index,
                    mbus_id: "30000901".into(),
                    manufacturer: "SEN".into(),
                    version: i64::from(new_bus.version),
                    medium: None,
                    digits: None,
                    initial_index: 0.004,
                    reason: "compteur bloqué".into(),
                },
            )
            .await
            .expect("replacement");
        tx.commit().await.expect("commit");
        assert_eq!(replacement.final_index, final_index);
        new
    };
    let rows = site
        .store
        .read()
        .await
        .expect("tx")
        .meter_sync_of_gateway(gateway_id)
        .await
        .expect("outbox");
    let pending: Vec<(i64, bool)> = rows
        .iter()
        .filter(|r| r.state == SyncState::Pending)
        .map(|r| (r.meter_id, r.active))
        .collect();
    assert_eq!(pending, vec![(old.db.id, false), (new.id, true)]);

    // The engine's visit reuses the old meter's slot: one write, then the read-back.
    let report = gardien::metering::program::program(&site.store, gateway_id)
        .await
        .expect("programming visit");
    assert_eq!(report.slots_written, 1);
    assert!(!report.list_read, "the stored list is trusted");
    assert_eq!(
        report.transactions,
        1 + 1 + 1 + 16,
        "connect, one slot write, status, list read back"
    );
    let after = device.snapshot().slots;
    for ((slot_a, a), (slot_b, b)) in before.iter().zip(&after) {
        assert_eq!(slot_a, slot_b);
        if *slot_a == slot {
            assert_eq!(b.id, 30_000_901);
            assert_eq!(
                b.manufacturer,
                gardien_drivers::mbg::pack_manufacturer("SEN").expect("letters")
            );
        } else {
            assert_eq!(a, b, "slot {slot_a} untouched");
        }
    }
    assert_eq!(before.len(), after.len());
    let rows = site
        .store
        .read()
        .await
        .expect("tx")
        .meter_sync_of_gateway(gateway_id)
        .await
        .expect("outbox");
    assert!(rows.iter().all(|r| r.state == SyncState::Confirmed));
    assert!(rows
        .iter()
        .any(|r| r.meter_id == old.db.id && !r.active && r.confirmed_at.is_some()));

    // Night 2, but the gateway has not re-read that slot yet (it still shows the old
    // meter's data): a stale slot, nothing stored for the new meter.
    assert!(device.set_stale(slot, true));
    site.advance(DAY - 8 * 3600);
    let run = site.collect(Duration::from_secs(30)).await;
    let part = site.part(&run, g).await;
    assert_eq!(
        (part.meters_expected, part.meters_read, part.meters_missing),
        (6, 5, 1)
    );
    assert_eq!(
        (part.readings_new, part.conflicts, part.rejected),
        (5, 0, 0)
    );
    assert!(site.readings(new.id).await.is_empty());
    assert_eq!(site.readings(old.db.id).await.len(), 1, "only night 1");
    assert_eq!(
        open_kinds(&site.alarms(new.id, false).await),
        vec![AlarmKind::StaleSlot]
    );
    let said = meter_problems(&part);
    assert_eq!(said.len(), 1, "{said:?}");
    assert_eq!(said[0]["meter_id"], new.id);
    let text = said[0]["problem"].as_str().unwrap_or_default();
    assert!(
        text.contains(&old.db.mbus_id) && text.contains("30000901"),
        "{text}"
    );

    // Night 3: the slot is read again; the new meter's reading is stored, the alarm clears.
    assert!(device.set_stale(slot, false));
    site.advance(DAY);
    let run = site.collect(Duration::from_secs(30)).await;
    assert_eq!((run.meters_read, run.meters_missing), (6, 0));
    let readings = site.readings(new.id).await;
    assert_eq!(readings.len(), 1);
    assert_eq!(readings[0].read_at, utc(T0 + 2 * DAY));
    assert_index(readings[0].value, &device, &new_bus, T0 + 2 * DAY, 2);
    let alarms = site.alarms(new.id, true).await;
    assert_eq!(alarms.len(), 1);
    assert_eq!(alarms[0].kind, AlarmKind::StaleSlot);
    assert!(alarms[0].cleared_at.is_some());
}

// ---------------------------------------------------------------------------------
// 3. Dead gateways among live ones
// ---------------------------------------------------------------------------------

#[tokio::test]
async fn dead_gateways_delay_nothing_and_are_reported() {
    let mut site = Site::new("La Panne").await;
    let live1 = site.gateway(0x0104, 2, 40_000_001, 41).await;
    let live2 = site.gateway(0x0201, 2, 41_000_001, 42).await;
    // A port nobody listens on.
    let closed = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.local_addr().expect("address").to_string()
    };
    let refused = site.dead_gateway(&closed, 42_000_001).await;
    // A simulator switched off: it closes every connection.
    let offline = site.gateway(0x0201, 1, 43_000_001, 43).await;
    site.gateways[offline].device().faults().go_offline(None);
    // A gateway that answers but whose read-out never ends (a minute per meter).
    let stuck = site
        .gateway_with(0x0201, 60_000, 1, 44_000_001, 44, |_, _| {})
        .await;

    let timeout = Duration::from_secs(2);
    let started = Instant::now();
    let run = site.collect(timeout).await;
    let took = started.elapsed();
    assert!(
        took >= timeout && took < timeout + Duration::from_secs(3),
        "the collection waits for the stuck gateway up to its timeout, no longer: {took:?}"
    );
    assert_eq!((run.gateways, run.gateways_failed), (5, 3));
    assert_eq!(
        (run.meters_expected, run.meters_read, run.meters_missing),
        (6 + 6 + 3 + 3 + 3, 12, 9)
    );

    for live in [live1, live2] {
        let part = site.part(&run, live).await;
        assert_eq!(part.error, None);
        assert_eq!((part.meters_read, part.readings_new), (6, 6));
        let gw = &site.gateways[live];
        for placed in &gw.meters {
            let readings = site.readings(placed.db.id).await;
            assert_eq!(readings.len(), 1);
            assert_index(readings[0].value, gw.device(), &placed.bus, T0, gw.major());
        }
    }
    for (dead, says) in [
        (refused, "connect"),
        (offline, ""),
        (stuck, "not read within 2 s"),
    ] {
        let part = site.part(&run, dead).await;
        let error = part
            .error
            .clone()
            .unwrap_or_else(|| panic!("gateway {dead}: no error in {part:?}"));
        assert!(error.contains(says), "gateway {dead}: {error}");
        assert_eq!(
            (part.meters_expected, part.meters_read, part.meters_missing),
            (3, 0, 3),
            "gateway {dead}"
        );
        assert_eq!(part.readings_new, 0);
        assert!(part.finished_at.is_some());
        for placed in &site.gateways[dead].meters {
            assert!(site.readings(placed.db.id).await.is_empty());
        }
    }

    // The switched-off gateway comes back: the next night it is read like the others.
    site.gateways[offline].device().faults().go_online();
    site.advance(DAY);
    let run = site.collect(timeout).await;
    assert_eq!(run.gateways_failed, 2);
    let part = site.part(&run, offline).await;
    assert_eq!((part.error, part.meters_read), (None, 3));
    let gw = &site.gateways[offline];
    for placed in &gw.meters {
        let readings = site.readings(placed.db.id).await;
        assert_eq!(readings.len(), 1);
        assert_eq!(readings[0].read_at, utc(T0 + DAY));
    }
}

// ---------------------------------------------------------------------------------
// 4. Re-collection stores nothing twice
// ---------------------------------------------------------------------------------

/// Two gateways whose bus takes 60 ms per meter: a read-out of their 6 meters lasts
/// longer than the driver's first look (20 ms per meter, from the profile), so the
/// driver sees it running even when the gateway clock has not moved (see the next test
/// for a bus faster than the profile).
#[tokio::test]
async fn collecting_again_stores_nothing_twice() {
    let mut site = Site::new("Le Doublon").await;
    site.gateway_with(0x0104, 60, 2, 50_000_001, 51, |_, _| {})
        .await;
    site.gateway_with(0x0201, 60, 2, 51_000_001, 52, |_, _| {})
        .await;
    let meters: Vec<i64> = site
        .gateways
        .iter()
        .flat_map(|g| g.meters.iter().map(|m| m.db.id))
        .collect();

    let first = site.collect(Duration::from_secs(30)).await;
    assert_eq!(first.meters_read, 12);
    // Again, the virtual clock not moved: the same readings, stored once.
    let second = site.collect(Duration::from_secs(30)).await;
    assert_eq!(
        (second.meters_read, second.meters_missing, second.errors),
        (12, 0, 0)
    );
    for (index, part) in site.parts(&second).await.iter().enumerate() {
        assert_eq!(part.error, None, "gateway {index}");
        assert_eq!(
            (part.readings_new, part.readings_duplicate, part.conflicts),
            (0, 6, 0),
            "gateway {index}"
        );
        // The list is trusted: no list read (16 requests), no write; connect, trigger,
        // a look every 20 ms while the 360 ms read-out runs, one read of 6 slots.
        assert!(
            (4..=24).contains(&part.requests),
            "gateway {index}: {}",
            part.requests
        );
    }
    for id in &meters {
        assert_eq!(site.readings(*id).await.len(), 1);
    }
    assert!(site
        .store
        .read()
        .await
        .expect("tx")
        .reading_conflicts(site.rid, None)
        .await
        .expect("conflicts")
        .is_empty());

    // A day later: a new reading per meter.
    site.advance(DAY);
    let third = site.collect(Duration::from_secs(30)).await;
    for part in site.parts(&third).await {
        assert_eq!((part.readings_new, part.readings_duplicate), (6, 0));
    }
    for id in &meters {
        let readings = site.readings(*id).await;
        let times: Vec<DateTime<Utc>> = readings.iter().map(|r| r.read_at).collect();
        assert_eq!(times, vec![utc(T0), utc(T0 + DAY)]);
    }
}

/// The same with a bus faster than the profile says (1 ms per meter, the manual says
/// "about 20 ms"): the read-out is over before the driver's first look, and its end
/// time equals the previous one's (the gateway clock has not moved), so the driver
/// cannot tell it ran and gives up after three times the expected time plus 10 s.
#[tokio::test]
async fn collecting_again_when_the_gateway_clock_has_not_moved() {
    let mut site = Site::new("Le Doublon rapide").await;
    site.gateway(0x0104, 2, 52_000_001, 53).await;
    site.gateway(0x0201, 2, 53_000_001, 54).await;
    let first = site.collect(Duration::from_secs(30)).await;
    assert_eq!(first.meters_read, 12);
    let second = site.collect(Duration::from_secs(30)).await;
    for part in site.parts(&second).await {
        assert_eq!(part.error, None);
        assert_eq!((part.readings_new, part.readings_duplicate), (0, 6));
    }
}

// ---------------------------------------------------------------------------------
// 5. Silent meters, status bits, alarms that clear
// ---------------------------------------------------------------------------------

#[tokio::test]
async fn silent_meters_and_status_bits_raise_alarms_that_clear() {
    let mut site = Site::new("Les Alarmes").await;
    let g = site.gateway(0x0104, 2, 60_000_001, 61).await;
    let device = site.gateways[g].device().clone();
    let silent = site.gateways[g].meters[0].clone();
    let leaking = site.gateways[g].meters[3].clone();

    // Night 1: meter 3 reports a leak; its reading is stored all the same.
    device
        .force_status(leaking.bus.id, gardien_simulators::mbg::status::LEAK)
        .expect("on the bus");
    let run = site.collect(Duration::from_secs(30)).await;
    assert_eq!((run.meters_read, run.meters_missing), (6, 0));
    assert_eq!(site.readings(leaking.db.id).await.len(), 1);
    let leak = site.alarms(leaking.db.id, false).await;
    assert_eq!(open_kinds(&leak), vec![AlarmKind::Leak]);
    let leak_since = leak[0].first_seen_at;

    // Night 2: meter 0 is silent; the gateway keeps its old index, nothing is stored.
    device
        .set_answering(silent.bus.id, false)
        .expect("on the bus");
    site.advance(DAY);
    let run = site.collect(Duration::from_secs(30)).await;
    assert_eq!((run.meters_read, run.meters_missing), (5, 1));
    let part = site.part(&run, g).await;
    assert_eq!(
        (part.meters_expected, part.meters_read, part.meters_missing),
        (6, 5, 1)
    );
    assert_eq!((part.readings_new, part.readings_duplicate), (5, 0));
    let said = meter_problems(&part);
    assert_eq!(said.len(), 1, "{said:?}");
    assert_eq!(said[0]["meter_id"], silent.db.id);
    let times: Vec<DateTime<Utc>> = site
        .readings(silent.db.id)
        .await
        .iter()
        .map(|r| r.read_at)
        .collect();
    assert_eq!(times, vec![utc(T0)]);
    assert_eq!(
        open_kinds(&site.alarms(silent.db.id, false).await),
        vec![AlarmKind::NoAnswer]
    );
    // The leak goes on: the same alarm, seen again.
    let leak = site.alarms(leaking.db.id, false).await;
    assert_eq!(leak.len(), 1);
    assert_eq!(leak[0].first_seen_at, leak_since);
    assert!(leak[0].last_seen_at > leak_since);
    assert_eq!(site.readings(leaking.db.id).await.len(), 2);

    // Night 3: it answers again and the leak is repaired: both alarms clear.
    device
        .set_answering(silent.bus.id, true)
        .expect("on the bus");
    device.force_status(leaking.bus.id, 0).expect("on the bus");
    site.advance(DAY);
    let run = site.collect(Duration::from_secs(30)).await;
    assert_eq!((run.meters_read, run.meters_missing), (6, 0));
    let readings = site.readings(silent.db.id).await;
    assert_eq!(readings.len(), 2);
    assert_index(readings[1].value, &device, &silent.bus, T0 + 2 * DAY, 1);
    for (meter, kind) in [
        (silent.db.id, AlarmKind::NoAnswer),
        (leaking.db.id, AlarmKind::Leak),
    ] {
        assert!(site.alarms(meter, false).await.is_empty());
        let all = site.alarms(meter, true).await;
        assert_eq!(all.len(), 1);
        assert_eq!(all[0].kind, kind);
        assert!(all[0].cleared_at.is_some());
    }
}

// ---------------------------------------------------------------------------------
// 6. Consumption across a rollover and a replacement
// ---------------------------------------------------------------------------------

#[tokio::test]
async fn consumption_across_a_rollover_and_a_replacement_matches_the_simulator() {
    const NIGHTS: i64 = 5;
    let swap_at = T0 + DAY + 10 * 3600; // 2026-01-11 12:00 UTC
    let mut site = Site::new("La Consommation").await;
    let mut truths = Vec::new();
    let g = site
        .gateway_with(0x0201, 1, 2, 70_000_001, 71, |device, bus| {
            // Flat 1's cold water meter is a few litres from 99999.999 m³ on night 1.
            let rollover = Scenario {
                kind: ScenarioKind::Rollover { before_wrap: 0.04 },
                meter_id: bus[0].id,
                start: T0,
                end: Some(T0 + (NIGHTS - 1) * DAY),
            };
            // Flat 2's cold water meter is replaced on the second day.
            let replaced = Scenario {
                kind: ScenarioKind::Replaced {
                    new_id: 70_000_901,
                    new_initial: 0.013,
                },
                meter_id: bus[3].id,
                start: swap_at,
                end: None,
            };
            truths.push(device.apply(&rollover).expect("rollover"));
            truths.push(device.apply(&replaced).expect("replacement"));
        })
        .await;
    let device = site.gateways[g].device().clone();
    let wrapping = site.gateways[g].meters[0].clone();
    let old = site.gateways[g].meters[3].clone();
    let (rollover, replaced) = (&truths[0], &truths[1]);
    let wraps_at = rollover.expected["wraps_at_unix"]
        .as_i64()
        .expect("the meter wraps within the period");
    assert!(wraps_at > T0 && wraps_at < T0 + (NIGHTS - 1) * DAY);
    assert_eq!(rollover.expected["modulus"].as_f64(), Some(100_000.0));

    let mut new: Option<Meter> = None;
    for night in 0..NIGHTS {
        if night == 2 {
            // The replacement, declared the day it happened (the collection reprograms).
            let mut tx = site.store.write().await.expect("tx");
            let (meter, _) = tx
                .replace_meter(
                    &actor(),
                    site.rid,
                    old.db.id,
                    &ReplacementInput {
                        replaced_on: NaiveDate::from_ymd_opt(2026, 1, 11).expect("date"),
                        final_index: replaced.expected["old_final_index"]
                            .as_f64()
                            .expect("final index"),
                        mbus_id: "70000901".into(),
                        manufacturer: old.bus.manufacturer.clone(),
                        version: i64::from(old.bus.version),
                        medium: None,
                        digits: None,
                        initial_index: replaced.expected["new_initial_index"]
                            .as_f64()
                            .expect("initial index"),
                        reason: String::new(),
                    },
                )
                .await
                .expect("replacement");
            tx.commit().await.expect("commit");
            new = Some(meter);
        }
        let run = site.collect(Duration::from_secs(30)).await;
        assert_eq!(
            (run.meters_read, run.meters_missing, run.errors),
            (6, 0, 0),
            "night {night}"
        );
        site.advance(DAY);
    }
    let new = new.expect("replaced");
    let last = T0 + (NIGHTS - 1) * DAY;
    let period = Period {
        start: utc(T0),
        end: utc(last),
        label: "test".into(),
    };

    // The wrapping meter: its stored indexes pass 99999.999 and start again from 0.
    let readings = site.readings(wrapping.db.id).await;
    assert_eq!(readings.len(), NIGHTS as usize);
    let values: Vec<f64> = readings.iter().map(|r| r.value).collect();
    assert!(values[0] > 99_999.0, "{values:?}");
    assert!(values[NIGHTS as usize - 1] < 10.0, "{values:?}");
    let history = meter_history(
        &site.meter(wrapping.db.id).await,
        readings.iter().map(|r| (r.read_at, r.value)).collect(),
    );
    let result = &consumption(&[history], std::slice::from_ref(&period))[0];
    let at = |t: i64| {
        device
            .meter_value_at(wrapping.bus.id, t)
            .expect("on the bus")
            .value()
    };
    let truth = at(last) + 100_000.0 - at(T0);
    let got = result.consumption.expect("known");
    assert!((got - truth).abs() < 1e-6, "rollover: {got} vs {truth}");
    assert!(got > 0.04 && got < 5.0, "{got}");
    assert_eq!((result.rollovers, result.backwards), (1, 0));

    // The replaced position: the old meter until its final index, the new one from its
    // first; never one meter's index minus the other's.
    let old_meter = site.meter(old.db.id).await;
    assert_eq!(old_meter.removed_on, NaiveDate::from_ymd_opt(2026, 1, 11));
    let old_readings = site.readings(old.db.id).await;
    let new_readings = site.readings(new.id).await;
    assert_eq!(old_readings.len(), 2, "nights 1 and 2");
    assert_eq!(new_readings.len(), NIGHTS as usize - 2, "nights 3 to 5");
    let chain = [
        meter_history(
            &old_meter,
            old_readings.iter().map(|r| (r.read_at, r.value)).collect(),
        ),
        meter_history(
            &new,
            new_readings.iter().map(|r| (r.read_at, r.value)).collect(),
        ),
    ];
    let result = &consumption(&chain, std::slice::from_ref(&period))[0];
    let old_final = replaced.expected["old_final_index"].as_f64().expect("f64");
    let new_initial = replaced.expected["new_initial_index"]
        .as_f64()
        .expect("f64");
    let old_at_t0 = device
        .meter_value_at(old.bus.id, T0)
        .expect("old meter")
        .value();
    let new_at_end = device
        .meter_value_at(70_000_901, last)
        .expect("new meter")
        .value();
    let truth = (old_final - old_at_t0) + (new_at_end - new_initial);
    let got = result.consumption.expect("known");
    assert!((got - truth).abs() < 1e-6, "replacement: {got} vs {truth}");
    assert_eq!(result.meters, vec![old.db.id, new.id]);
    assert_eq!((result.rollovers, result.backwards), (0, 0));
    // The stored final index is the one the simulator recorded at the swap.
    assert_eq!(old_meter.final_index, Some(old_final));
    assert_eq!(
        device
            .meter_value_at(old.bus.id, swap_at)
            .expect("old meter")
            .value(),
        old_final
    );
}

/// Firmware 1.x sends a float32, whose steps near 100 000 are 1/128: an index of
/// 99 999.998 m³ (a 5-digit meter two litres before it wraps) arrives as exactly
/// 100 000.0. That is the meter's index to float32 precision, as any other fw1
/// reading, and should be kept so that the night is not lost.
#[tokio::test]
async fn a_float32_index_rounded_up_to_the_top_is_kept() {
    let mut site = Site::new("Le Sommet").await;
    let g = site
        .gateway_with(0x0104, 1, 1, 80_000_001, 81, |device, bus| {
            let rollover = Scenario {
                kind: ScenarioKind::Rollover { before_wrap: 0.002 },
                meter_id: bus[0].id,
                start: T0,
                end: Some(T0 + 2 * DAY),
            };
            device.apply(&rollover).expect("rollover");
        })
        .await;
    let device = site.gateways[g].device().clone();
    let meter = site.gateways[g].meters[0].clone();
    let at_t0 = device
        .meter_value_at(meter.bus.id, T0)
        .expect("on the bus")
        .value();
    assert_eq!(at_t0, 99_999.998);
    assert_eq!(at_t0 as f32, 100_000.0_f32);

    let run = site.collect(Duration::from_secs(30)).await;
    let part = site.part(&run, g).await;
    assert_eq!(
        (part.meters_read, part.rejected),
        (3, 0),
        "{:?}",
        meter_problems(&part)
    );
    assert!(open_kinds(&site.alarms(meter.db.id, false).await).is_empty());
    let readings = site.readings(meter.db.id).await;
    assert_eq!(readings.len(), 1);
    assert!((readings[0].value - at_t0).abs() <= at_t0 * 6e-8);
}
